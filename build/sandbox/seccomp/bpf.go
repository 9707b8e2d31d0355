package seccomp

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// seccompProfile is the evaluated profile for one GOARCH: the errno of its
// default action and the ABIs a process of that GOARCH may call the
// kernel with.
type seccompProfile struct {
	defaultErrno uint32
	abis         []seccompABI
}

// seccompABI is one system call convention: the seccomp_data.arch value its
// calls arrive with (x86-64 and x32 share one, x32 numbers carry bit 30),
// whether arguments are compared on their low 32 bits only (as libseccomp
// does for 32-bit ABIs), and the calls the profile lets through.
type seccompABI struct {
	name  string
	audit uint32
	arg32 bool
	calls []seccompCall
	// deny are rules checked before calls, on the low 32 bits of their
	// arguments: a call matching one fails with its errno. Docker's profile
	// has none; chroot isolation adds its signal rules here (see
	// withChrootRules).
	deny []seccompCall
}

// seccompCall is one rule for system call nr: it applies on kernels at
// least minKernel (zero: all) to calls whose arguments all satisfy args
// (none: every call), and then allows the call, or fails it with errno
// when errno is not zero. Several rules for one number are alternatives;
// the generator guarantees they agree on the action.
type seccompCall struct {
	nr        uint32
	name      string
	errno     uint32
	minKernel [2]uint8
	args      []seccompArg
	// notify hands a matching call to the filter's listener instead
	// (SECCOMP_RET_USER_NOTIF), which decides; see Install.
	notify bool
}

// seccompArg is a condition on one argument, with the profile's
// operators: value is the mask and valueTwo the expected result for
// seccompOpMaskedEQ.
type seccompArg struct {
	index           uint8
	op              seccompOp
	value, valueTwo uint64
}

type seccompOp uint8

const (
	seccompOpNE seccompOp = iota + 1
	seccompOpLT
	seccompOpLE
	seccompOpEQ
	seccompOpGE
	seccompOpGT
	seccompOpMaskedEQ
)

// Offsets in struct seccomp_data.
const (
	seccompNrOff   = 0
	seccompArchOff = 4
	seccompArgsOff = 16
)

func bpfStmt(code uint16, k uint32) unix.SockFilter {
	return unix.SockFilter{Code: code, K: k}
}

func bpfJump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
)

func retErrno(errno uint32) uint32 {
	return unix.SECCOMP_RET_ERRNO | errno&unix.SECCOMP_RET_DATA
}

// action returns what the rule does once it matches.
func (c seccompCall) action() uint32 {
	if c.notify {
		return unix.SECCOMP_RET_USER_NOTIF
	}
	if c.errno != 0 {
		return retErrno(c.errno)
	}
	return retAllow
}

// kernelAtLeast reports whether kernel is min or newer.
func kernelAtLeast(kernel, min [2]uint8) bool {
	return kernel[0] > min[0] || kernel[0] == min[0] && kernel[1] >= min[1]
}

// Jump targets of an argument check, resolved when the check is placed in
// its rule: the next instruction, the end of the check (it holds) or the
// end of the rule (it does not).
const (
	tNext = iota
	tPass
	tFail
)

type checkInsn struct {
	ins    unix.SockFilter
	jt, jf int // targets, for conditional jumps
	jump   bool
}

// argCheck returns the instructions that test one argument condition,
// comparing both 32-bit halves unless arg32.
func argCheck(a seccompArg, arg32 bool) []checkInsn {
	lo := uint32(seccompArgsOff + 8*int(a.index)) // little-endian: low word first
	hi := lo + 4
	ld := func(off uint32) checkInsn {
		return checkInsn{ins: bpfStmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off)}
	}
	and := func(k uint32) checkInsn {
		return checkInsn{ins: bpfStmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, k)}
	}
	j := func(op uint16, k uint32, jt, jf int) checkInsn {
		return checkInsn{ins: bpfJump(unix.BPF_JMP|op|unix.BPF_K, k, 0, 0), jt: jt, jf: jf, jump: true}
	}
	vlo, vhi := uint32(a.value), uint32(a.value>>32)
	tlo, thi := uint32(a.valueTwo), uint32(a.valueTwo>>32)
	var high, low []checkInsn
	switch a.op {
	case seccompOpEQ:
		high = []checkInsn{ld(hi), j(unix.BPF_JEQ, vhi, tNext, tFail)}
		low = []checkInsn{ld(lo), j(unix.BPF_JEQ, vlo, tPass, tFail)}
	case seccompOpNE:
		high = []checkInsn{ld(hi), j(unix.BPF_JEQ, vhi, tNext, tPass)}
		low = []checkInsn{ld(lo), j(unix.BPF_JEQ, vlo, tFail, tPass)}
	case seccompOpMaskedEQ:
		high = []checkInsn{ld(hi), and(vhi), j(unix.BPF_JEQ, thi, tNext, tFail)}
		low = []checkInsn{ld(lo), and(vlo), j(unix.BPF_JEQ, tlo, tPass, tFail)}
	case seccompOpGT, seccompOpGE:
		high = []checkInsn{ld(hi), j(unix.BPF_JGT, vhi, tPass, tNext), j(unix.BPF_JEQ, vhi, tNext, tFail)}
		op := uint16(unix.BPF_JGT)
		if a.op == seccompOpGE {
			op = unix.BPF_JGE
		}
		low = []checkInsn{ld(lo), j(op, vlo, tPass, tFail)}
	case seccompOpLT, seccompOpLE:
		high = []checkInsn{ld(hi), j(unix.BPF_JGT, vhi, tFail, tNext), j(unix.BPF_JEQ, vhi, tNext, tPass)}
		op := uint16(unix.BPF_JGE)
		if a.op == seccompOpLE {
			op = unix.BPF_JGT
		}
		low = []checkInsn{ld(lo), j(op, vlo, tFail, tPass)}
	default:
		panic(fmt.Sprintf("seccomp operator %d", a.op))
	}
	if arg32 {
		return low
	}
	return append(high, low...)
}

// ruleBlock returns the instructions of one rule: its argument checks, then
// a return of its action; a failed check jumps past the return.
func ruleBlock(c seccompCall, arg32 bool) ([]unix.SockFilter, error) {
	var checks [][]checkInsn
	n := 1 // the return
	for _, a := range c.args {
		ch := argCheck(a, arg32)
		checks = append(checks, ch)
		n += len(ch)
	}
	p := make([]unix.SockFilter, 0, n)
	for _, ch := range checks {
		start := len(p)
		target := func(t, at int) (uint8, error) {
			var dest int
			switch t {
			case tNext:
				dest = at + 1
			case tPass:
				dest = start + len(ch)
			case tFail:
				dest = n
			}
			off := dest - at - 1
			if off < 0 || off > 255 {
				return 0, fmt.Errorf("build seccomp rule for %s: jump of %d", c.name, off)
			}
			return uint8(off), nil
		}
		for i, ci := range ch {
			ins := ci.ins
			if ci.jump {
				var err error
				if ins.Jt, err = target(ci.jt, start+i); err != nil {
					return nil, err
				}
				if ins.Jf, err = target(ci.jf, start+i); err != nil {
					return nil, err
				}
			}
			p = append(p, ins)
		}
	}
	return append(p, bpfStmt(unix.BPF_RET|unix.BPF_K, c.action())), nil
}

// nrEntry is what the filter does with one system call number: an
// unconditional action, or rules tried in turn before the default.
type nrEntry struct {
	nr            uint32
	unconditional bool
	action        uint32
	rules         []seccompCall
	arg32         bool
}

// denyBlock returns the instructions that test the deny rules of abis, each
// after loading the call number again (a rule's checks overwrite it): a call
// that matches one returns its errno; any other falls through past the block.
func denyBlock(abis []seccompABI) ([]unix.SockFilter, error) {
	var p []unix.SockFilter
	for _, abi := range abis {
		for _, r := range abi.deny {
			b, err := ruleBlock(r, true)
			if err != nil {
				return nil, err
			}
			if len(b) > 255 {
				return nil, fmt.Errorf("build seccomp rule for %s: %d instructions", r.name, len(b))
			}
			p = append(p,
				bpfStmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompNrOff),
				bpfJump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, r.nr, 0, uint8(len(b))))
			p = append(p, b...)
		}
	}
	return p, nil
}

// abiBlock returns the instructions for the ABIs sharing one audit value:
// first their deny rules (denyBlock); then load the call number, then for each number the profile names either a
// return (consecutive allowed numbers share a range test) or a jump into
// its rules; everything else returns the default errno.
func abiBlock(abis []seccompABI, kernel [2]uint8, defaultErrno uint32) ([]unix.SockFilter, error) {
	byNr := map[uint32]*nrEntry{}
	var nrs []uint32
	for _, abi := range abis {
		for _, c := range abi.calls {
			if !kernelAtLeast(kernel, c.minKernel) {
				continue
			}
			e := byNr[c.nr]
			if e == nil {
				e = &nrEntry{nr: c.nr, action: c.action(), arg32: abi.arg32}
				byNr[c.nr] = e
				nrs = append(nrs, c.nr)
			}
			if e.action != c.action() || e.arg32 != abi.arg32 {
				return nil, fmt.Errorf("build seccomp filter: conflicting rules for %s", c.name)
			}
			if len(c.args) == 0 {
				e.unconditional = true
			}
			e.rules = append(e.rules, c)
		}
	}
	slices.Sort(nrs)
	p, err := denyBlock(abis)
	if err != nil {
		return nil, err
	}
	p = append(p, bpfStmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompNrOff))
	for i := 0; i < len(nrs); i++ {
		e := byNr[nrs[i]]
		if !e.unconditional {
			var body []unix.SockFilter
			for _, r := range e.rules {
				b, err := ruleBlock(r, e.arg32)
				if err != nil {
					return nil, err
				}
				body = append(body, b...)
			}
			body = append(body, bpfStmt(unix.BPF_RET|unix.BPF_K, retErrno(defaultErrno)))
			p = append(p,
				bpfJump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, e.nr, 1, 0),
				bpfStmt(unix.BPF_JMP|unix.BPF_JA, uint32(len(body))))
			p = append(p, body...)
			continue
		}
		// Extend a run of consecutive numbers with the same unconditional action.
		last := i
		for last+1 < len(nrs) {
			n := byNr[nrs[last+1]]
			if nrs[last+1] != nrs[last]+1 || !n.unconditional || n.action != e.action {
				break
			}
			last++
		}
		ret := bpfStmt(unix.BPF_RET|unix.BPF_K, e.action)
		if last == i {
			p = append(p, bpfJump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, e.nr, 0, 1), ret)
		} else {
			p = append(p,
				bpfJump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, e.nr, 0, 2),
				bpfJump(unix.BPF_JMP|unix.BPF_JGT|unix.BPF_K, nrs[last], 1, 0),
				ret)
		}
		i = last
	}
	return append(p, bpfStmt(unix.BPF_RET|unix.BPF_K, retErrno(defaultErrno))), nil
}

// seccompProgram returns the whole filter for profile on a kernel of
// version kernel (major, minor): dispatch on the architecture, then that
// architecture's block; an unknown architecture kills the process, as
// libseccomp's default does.
func seccompProgram(profile seccompProfile, kernel [2]uint8) ([]unix.SockFilter, error) {
	var audits []uint32
	groups := map[uint32][]seccompABI{}
	for _, abi := range profile.abis {
		if groups[abi.audit] == nil {
			audits = append(audits, abi.audit)
		}
		groups[abi.audit] = append(groups[abi.audit], abi)
	}
	blocks := make([][]unix.SockFilter, len(audits))
	for i, a := range audits {
		b, err := abiBlock(groups[a], kernel, profile.defaultErrno)
		if err != nil {
			return nil, err
		}
		blocks[i] = b
	}
	// Header: load arch; per arch "jeq audit, 0, 1; ja block"; ret kill.
	p := []unix.SockFilter{bpfStmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompArchOff)}
	start := 1 + 2*len(audits) + 1
	for i, a := range audits {
		ja := len(p) + 1 // index of the ja instruction
		p = append(p,
			bpfJump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, a, 0, 1),
			bpfStmt(unix.BPF_JMP|unix.BPF_JA, uint32(start-(ja+1))))
		start += len(blocks[i])
	}
	p = append(p, bpfStmt(unix.BPF_RET|unix.BPF_K, retKill))
	for _, b := range blocks {
		p = append(p, b...)
	}
	if len(p) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("build seccomp filter: %d instructions", len(p))
	}
	return p, nil
}

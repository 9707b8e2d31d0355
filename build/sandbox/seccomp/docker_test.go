package seccomp

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"testing"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"builder/build/sandbox/seccomp/internal/seccompgen"
	"builder/internal/testenv"
)

// capNames names the capabilities of DefaultCapabilities as the profile
// does.
var capNames = map[int]string{
	unix.CAP_CHOWN: "CAP_CHOWN", unix.CAP_DAC_OVERRIDE: "CAP_DAC_OVERRIDE",
	unix.CAP_FSETID: "CAP_FSETID", unix.CAP_FOWNER: "CAP_FOWNER",
	unix.CAP_MKNOD: "CAP_MKNOD", unix.CAP_NET_RAW: "CAP_NET_RAW",
	unix.CAP_SETGID: "CAP_SETGID", unix.CAP_SETUID: "CAP_SETUID",
	unix.CAP_SETFCAP: "CAP_SETFCAP", unix.CAP_SETPCAP: "CAP_SETPCAP",
	unix.CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE", unix.CAP_SYS_CHROOT: "CAP_SYS_CHROOT",
	unix.CAP_KILL: "CAP_KILL", unix.CAP_AUDIT_WRITE: "CAP_AUDIT_WRITE",
}

// TestSeccompCapabilities checks that the table was generated for the
// capability set RUN keeps.
func TestSeccompCapabilities(t *testing.T) {
	var names []string
	for _, c := range DefaultCapabilities {
		n, ok := capNames[c]
		if !ok {
			t.Fatalf("capability %d has no name here", c)
		}
		names = append(names, n)
	}
	want := slices.Sorted(slices.Values(seccompgen.DefaultCapabilities))
	if slices.Sort(names); !slices.Equal(names, want) {
		t.Errorf("DefaultCapabilities are %v, the seccomp table assumes %v", names, want)
	}
}

// refMatch compares one argument as libseccomp does: on 64 bits, or on the
// low 32 bits for a 32-bit ABI.
func refMatch(a specs.LinuxSeccompArg, v uint64, arg32 bool) bool {
	val, two := a.Value, a.ValueTwo
	if arg32 {
		v, val, two = v&0xffffffff, val&0xffffffff, two&0xffffffff
	}
	switch a.Op {
	case specs.OpNotEqual:
		return v != val
	case specs.OpLessThan:
		return v < val
	case specs.OpLessEqual:
		return v <= val
	case specs.OpEqualTo:
		return v == val
	case specs.OpGreaterEqual:
		return v >= val
	case specs.OpGreaterThan:
		return v > val
	case specs.OpMaskedEqual:
		return v&val == two
	}
	panic("unknown operator " + string(a.Op))
}

// refAction is what Docker's evaluated profile does with a call: the
// action of a rule naming it whose arguments all match, or the default.
func refAction(p *specs.LinuxSeccomp, names map[uint32][]string, nr uint32, args [6]uint64, arg32 bool) uint32 {
	for _, s := range p.Syscalls {
		if !slices.ContainsFunc(s.Names, func(n string) bool { return slices.Contains(names[nr], n) }) {
			continue
		}
		if slices.ContainsFunc(s.Args, func(a specs.LinuxSeccompArg) bool { return !refMatch(a, args[a.Index], arg32) }) {
			continue
		}
		switch s.Action {
		case specs.ActAllow:
			return retAllow
		case specs.ActErrno:
			errno := *p.DefaultErrnoRet
			if s.ErrnoRet != nil {
				errno = *s.ErrnoRet
			}
			return unix.SECCOMP_RET_ERRNO | uint32(errno)
		}
		panic("unexpected action " + string(s.Action))
	}
	return unix.SECCOMP_RET_ERRNO | uint32(*p.DefaultErrnoRet)
}

// argProbes returns argument values worth trying for the rules naming a
// call: each compared value, its neighbours, with high bits set, and each
// bit of a mask alone.
func argProbes(p *specs.LinuxSeccomp, names []string) map[uint][]uint64 {
	probes := map[uint][]uint64{}
	for _, s := range p.Syscalls {
		if !slices.ContainsFunc(s.Names, func(n string) bool { return slices.Contains(names, n) }) {
			continue
		}
		for _, a := range s.Args {
			vs := []uint64{0, 1, a.Value, a.Value - 1, a.Value + 1, a.ValueTwo, 1<<32 | a.Value, 0xffffffff, ^uint64(0), 1 << 32}
			if a.Op == specs.OpMaskedEqual {
				for b := 0; b < 64; b++ {
					if a.Value&(1<<b) != 0 {
						vs = append(vs, 1<<b, 1<<b|uint64(unix.SIGCHLD))
					}
				}
			}
			probes[a.Index] = append(probes[a.Index], vs...)
		}
	}
	return probes
}

func seccompData6(arch, nr uint32, args [6]uint64) []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], nr)
	binary.LittleEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.LittleEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

func actionString(a uint32) string {
	switch a & unix.SECCOMP_RET_ACTION_FULL {
	case retAllow:
		return "allow"
	case unix.SECCOMP_RET_ERRNO:
		return unix.ErrnoName(unix.Errno(a & unix.SECCOMP_RET_DATA))
	case retKill:
		return "kill"
	}
	return fmt.Sprintf("%#x", a)
}

// TestSeccompMatchesDocker evaluates Docker's default profile with
// moby/profiles' own code for this machine and Docker's default
// capabilities, and checks that our filter does the same for every system
// call number of every ABI the profile covers, with every argument value
// the profile's conditions distinguish.
func TestSeccompMatchesDocker(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		testenv.Skip(t, "no seccomp table for %s", runtime.GOARCH)
	}
	var caps []string
	for _, c := range DefaultCapabilities {
		caps = append(caps, capNames[c])
	}
	ref, err := seccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: caps}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := seccompgen.FindModules(".")
	if err != nil {
		t.Fatal(err)
	}
	prog := ourProgram(t)
	var diffs []string
	for _, arch := range ref.Architectures {
		abi, ok := seccompgen.LookupABI(arch)
		if !ok {
			t.Fatalf("no ABI for %s", arch)
		}
		table, err := seccompgen.Numbers(m.SysDir, arch)
		if err != nil {
			t.Fatal(err)
		}
		names := map[uint32][]string{}
		var top uint32
		for n, nr := range table {
			names[nr] = append(names[nr], n)
			top = max(top, nr&^seccompgen.X32Bit)
		}
		base := uint32(0)
		if arch == specs.ArchX32 {
			base = seccompgen.X32Bit
		}
		nrs := []uint32{}
		for nr := uint32(0); nr <= top+16 && nr < 0x1000; nr++ {
			nrs = append(nrs, base|nr)
		}
		for nr := range names {
			if nr&^base >= 0x1000 {
				nrs = append(nrs, nr) // ARM private calls
			}
		}
		for _, nr := range nrs {
			tries := [][6]uint64{{}}
			for idx, vs := range argProbes(ref, names[nr]) {
				for _, v := range vs {
					var args [6]uint64
					args[idx] = v
					tries = append(tries, args)
				}
			}
			for _, args := range tries {
				want := refAction(ref, names, nr, args, abi.Arg32)
				got := runBPF(t, prog, seccompData6(abi.Audit, nr, args))
				if got != want {
					name := fmt.Sprint(names[nr])
					if len(names[nr]) == 0 {
						name = "-"
					}
					diffs = append(diffs, fmt.Sprintf("%s %s (%d) args %#x: docker %s, ours %s",
						abi.Name, name, nr&^base, args[:1], actionString(want), actionString(got)))
				}
			}
		}
	}
	sort.Strings(diffs)
	diffs = slices.Compact(diffs)
	for _, d := range diffs {
		t.Error(d)
	}
}

// ourProgram builds the filter Install loads on this machine.
func ourProgram(t *testing.T) []unix.SockFilter {
	t.Helper()
	profile, ok := seccompDefaultProfile(runtime.GOARCH)
	if !ok {
		t.Fatalf("no seccomp table for %s", runtime.GOARCH)
	}
	kernel, err := kernelVersion()
	if err != nil {
		t.Fatal(err)
	}
	prog, err := seccompProgram(profile, kernel)
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

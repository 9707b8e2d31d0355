// Package seccompgen turns Docker's default seccomp profile
// (github.com/moby/profiles/seccomp) into the Go table that package seccomp
// compiles into its classic-BPF filter. It runs at development time, from
// the generate directive of package seccomp, so that the builder binary
// carries neither the profile's JSON nor libseccomp; a test in this package
// regenerates the table and fails when the committed one is stale.
//
// The profile is evaluated as Docker evaluates it (setupSeccomp in
// moby/profiles): a rule applies when its includes hold and its excludes do
// not, for the native architecture of a GOARCH and for Docker's default
// capability set. Rules gated on a minimum kernel version keep that version
// in the table and are resolved when the filter is built, on the running
// kernel. System call names are resolved to numbers per ABI from
// golang.org/x/sys/unix's generated tables, the same numbers the kernel
// headers give.
package seccompgen

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DefaultCapabilities is Docker's default capability set, the one RUN keeps
// (package seccomp's DefaultCapabilities; a test there checks they agree).
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
	"CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
	"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// GOARCHes are the architectures a table is generated for.
var GOARCHes = []string{"amd64", "arm64"}

// goToNative maps a GOARCH to the architecture name the profile's
// includes and excludes use (moby/profiles' goToNative).
var goToNative = map[string]string{"amd64": "amd64", "arm64": "arm64"}

// nativeArch maps a GOARCH to the profile's architecture whose archMap
// entry lists the ABIs a process of that GOARCH may call the kernel with.
var nativeArch = map[string]specs.Arch{"amd64": specs.ArchX86_64, "arm64": specs.ArchAARCH64}

// ABI is one system call convention a filter must cover: the value of
// seccomp_data.arch it arrives with, whether libseccomp compares its
// arguments on 32 bits, and its name-to-number table.
type ABI struct {
	Arch  specs.Arch
	Name  string // short name, for comments and messages
	Audit uint32
	Arg32 bool
}

var abis = map[specs.Arch]ABI{
	specs.ArchX86_64:  {Arch: specs.ArchX86_64, Name: "x86_64", Audit: unix.AUDIT_ARCH_X86_64},
	specs.ArchX32:     {Arch: specs.ArchX32, Name: "x32", Audit: unix.AUDIT_ARCH_X86_64, Arg32: true},
	specs.ArchX86:     {Arch: specs.ArchX86, Name: "x86", Audit: unix.AUDIT_ARCH_I386, Arg32: true},
	specs.ArchAARCH64: {Arch: specs.ArchAARCH64, Name: "aarch64", Audit: unix.AUDIT_ARCH_AARCH64},
	specs.ArchARM:     {Arch: specs.ArchARM, Name: "arm", Audit: unix.AUDIT_ARCH_ARM, Arg32: true},
}

// X32Bit is the bit x32 system call numbers carry (__X32_SYSCALL_BIT).
const X32Bit = 0x40000000

// x32Own are the calls whose x32 number differs from the x86-64 one: they
// take pointers to structures laid out differently, so x32 has its own
// entries from 512 (arch/x86/entry/syscalls/syscall_64.tbl, "x32" rows).
// The x86-64 numbers of these calls are not valid on x32.
var x32Own = []string{
	"rt_sigaction", "rt_sigreturn", "ioctl", "readv", "writev", "recvfrom",
	"sendmsg", "recvmsg", "execve", "ptrace", "rt_sigpending", "rt_sigtimedwait",
	"rt_sigqueueinfo", "sigaltstack", "timer_create", "mq_notify", "kexec_load",
	"waitid", "set_robust_list", "get_robust_list", "vmsplice", "move_pages",
	"preadv", "pwritev", "rt_tgsigqueueinfo", "recvmmsg", "sendmmsg",
	"process_vm_readv", "process_vm_writev", "setsockopt", "getsockopt",
	"io_setup", "io_submit", "execveat", "preadv2", "pwritev2",
}

// x32Missing are x86-64 calls x32 does not have at all ("64" rows without
// an x32 counterpart).
var x32Missing = []string{
	"_sysctl", "create_module", "epoll_ctl_old", "epoll_wait_old",
	"get_kernel_syms", "get_thread_area", "nfsservctl", "query_module",
	"set_thread_area", "uselib", "vserver",
}

// armPrivate are the ARM-specific calls numbered from __ARM_NR_BASE
// (arch/arm/include/uapi/asm/unistd.h), which x/sys/unix does not list.
var armPrivate = map[string]uint32{
	"breakpoint": 0x0f0001, "cacheflush": 0x0f0002, "usr26": 0x0f0003,
	"usr32": 0x0f0004, "set_tls": 0x0f0005, "get_tls": 0x0f0006,
}

// Modules locates the module versions the generated table depends on.
type Modules struct {
	ProfilesVersion string // github.com/moby/profiles/seccomp
	SysVersion      string // golang.org/x/sys
	SysDir          string // golang.org/x/sys source directory
}

// FindModules asks the go command, run in dir (inside the builder module),
// where the pinned golang.org/x/sys and moby/profiles versions live.
func FindModules(dir string) (Modules, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Version}} {{.Dir}}",
		"golang.org/x/sys", "github.com/moby/profiles/seccomp")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return Modules{}, fmt.Errorf("list modules: %w", err)
	}
	var m Modules
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return Modules{}, fmt.Errorf("list modules: unexpected line %q", line)
		}
		switch f[0] {
		case "golang.org/x/sys":
			m.SysVersion, m.SysDir = f[1], f[2]
		case "github.com/moby/profiles/seccomp":
			m.ProfilesVersion = f[1]
		}
	}
	if m.SysDir == "" || m.ProfilesVersion == "" {
		return Modules{}, errors.New("list modules: golang.org/x/sys or moby/profiles/seccomp missing")
	}
	return m, nil
}

// readSysnum reads the SYS_* constants of x/sys/unix's
// zsysnum_linux_<goarch>.go as a name-to-number table.
func readSysnum(sysDir, goarch string) (map[string]uint32, error) {
	path := filepath.Join(sysDir, "unix", "zsysnum_linux_"+goarch+".go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("parse syscall table: %w", err)
	}
	t := map[string]uint32{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, "SYS_") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.INT {
					continue
				}
				v, err := strconv.ParseUint(lit.Value, 0, 32)
				if err != nil {
					return nil, fmt.Errorf("parse %s in %s: %w", n.Name, path, err)
				}
				t[strings.ToLower(strings.TrimPrefix(n.Name, "SYS_"))] = uint32(v)
			}
		}
	}
	if len(t) < 100 {
		return nil, fmt.Errorf("parse syscall table %s: only %d entries", path, len(t))
	}
	return t, nil
}

// Numbers returns the name-to-number table of one ABI, as seen in
// seccomp_data.nr (x32 numbers carry X32Bit).
func Numbers(sysDir string, arch specs.Arch) (map[string]uint32, error) {
	switch arch {
	case specs.ArchX86_64:
		return readSysnum(sysDir, "amd64")
	case specs.ArchX86:
		return readSysnum(sysDir, "386")
	case specs.ArchAARCH64:
		return readSysnum(sysDir, "arm64")
	case specs.ArchARM:
		t, err := readSysnum(sysDir, "arm")
		if err != nil {
			return nil, err
		}
		delete(t, "syscall_mask") // a mask, not a call
		for n, nr := range armPrivate {
			t[n] = nr
		}
		return t, nil
	case specs.ArchX32:
		t64, err := readSysnum(sysDir, "amd64")
		if err != nil {
			return nil, err
		}
		t := map[string]uint32{}
		for n, nr := range t64 {
			t[n] = X32Bit | nr
		}
		for _, n := range x32Missing {
			delete(t, n)
		}
		for i, n := range x32Own {
			t[n] = X32Bit | uint32(512+i)
		}
		return t, nil
	}
	return nil, fmt.Errorf("no syscall table for %s", arch)
}

// Rule is one rule of the evaluated profile: the calls it names, what it
// does (errno 0 allows, otherwise the call fails with that errno), the
// conditions on arguments (all must hold), and the oldest kernel it applies
// to (zero: any).
type Rule struct {
	Names     []string
	Errno     uint32
	Args      []specs.LinuxSeccompArg
	MinKernel [2]uint8
}

// Evaluate applies the includes and excludes of profile's rules for goarch
// and caps, as Docker's setupSeccomp does for a container with those
// capabilities on that architecture, and returns the rules that remain, the
// errno of the default action and the ABIs the filter covers. A rule names
// its calls in Names: the deprecated single Name of old JSON profiles is
// not read (the default profile never sets it).
func Evaluate(profile *seccomp.Seccomp, goarch string, caps []string) ([]Rule, uint32, []ABI, error) {
	native, ok := goToNative[goarch]
	if !ok {
		return nil, 0, nil, fmt.Errorf("evaluate profile: unknown GOARCH %s", goarch)
	}
	if profile.DefaultAction != specs.ActErrno || profile.DefaultErrnoRet == nil {
		return nil, 0, nil, fmt.Errorf("evaluate profile: default action %s without errno is not supported", profile.DefaultAction)
	}
	defErrno := uint32(*profile.DefaultErrnoRet)
	var list []ABI
	for _, a := range profile.ArchMap {
		if a.Arch != nativeArch[goarch] {
			continue
		}
		for _, arch := range append([]specs.Arch{a.Arch}, a.SubArches...) {
			abi, ok := abis[arch]
			if !ok {
				return nil, 0, nil, fmt.Errorf("evaluate profile: unknown architecture %s", arch)
			}
			list = append(list, abi)
		}
	}
	if len(list) == 0 {
		return nil, 0, nil, fmt.Errorf("evaluate profile: no archMap entry for %s", goarch)
	}
	var rules []Rule
	for _, call := range profile.Syscalls {
		names := call.Names
		if ex := call.Excludes; ex != nil {
			if ex.MinKernel != nil {
				return nil, 0, nil, fmt.Errorf("evaluate profile: excludes.minKernel on %v is not supported", names)
			}
			if slices.Contains(ex.Arches, native) || slices.ContainsFunc(ex.Caps, func(c string) bool { return slices.Contains(caps, c) }) {
				continue
			}
		}
		var minKernel [2]uint8
		if in := call.Includes; in != nil {
			if len(in.Arches) > 0 && !slices.Contains(in.Arches, native) {
				continue
			}
			if slices.ContainsFunc(in.Caps, func(c string) bool { return !slices.Contains(caps, c) }) {
				continue
			}
			if in.MinKernel != nil {
				minKernel = [2]uint8{uint8(in.MinKernel.Kernel), uint8(in.MinKernel.Major)}
			}
		}
		r := Rule{Names: names, Args: call.Args, MinKernel: minKernel}
		switch call.Action {
		case specs.ActAllow:
		case specs.ActErrno:
			r.Errno = defErrno
			if call.ErrnoRet != nil {
				r.Errno = uint32(*call.ErrnoRet)
			}
		default:
			return nil, 0, nil, fmt.Errorf("evaluate profile: action %s on %v is not supported", call.Action, names)
		}
		seen := map[uint]bool{}
		for _, a := range call.Args {
			if seen[a.Index] || a.Index > 5 {
				return nil, 0, nil, fmt.Errorf("evaluate profile: argument %d of %v repeated or out of range", a.Index, names)
			}
			seen[a.Index] = true
			if _, ok := opNames[a.Op]; !ok {
				return nil, 0, nil, fmt.Errorf("evaluate profile: operator %s on %v is not supported", a.Op, names)
			}
		}
		rules = append(rules, r)
	}
	return rules, defErrno, list, nil
}

// opNames maps the profile's comparison operators to the Go constants of
// package seccomp.
var opNames = map[specs.LinuxSeccompOperator]string{
	specs.OpNotEqual:     "seccompOpNE",
	specs.OpLessThan:     "seccompOpLT",
	specs.OpLessEqual:    "seccompOpLE",
	specs.OpEqualTo:      "seccompOpEQ",
	specs.OpGreaterEqual: "seccompOpGE",
	specs.OpGreaterThan:  "seccompOpGT",
	specs.OpMaskedEqual:  "seccompOpMaskedEQ",
}

// call is one row of the generated table.
type call struct {
	name  string
	nr    uint32
	rule  Rule
	order int
}

// resolve turns rules into rows for one ABI, sorted by number, and returns
// the names the ABI does not have. A number's rows must agree on their
// action; rows without arguments come first.
func resolve(rules []Rule, table map[string]uint32) ([]call, []string, error) {
	var rows []call
	missing := map[string]bool{}
	for i, r := range rules {
		for _, n := range r.Names {
			nr, ok := table[n]
			if !ok {
				missing[n] = true
				continue
			}
			rows = append(rows, call{name: n, nr: nr, rule: r, order: i})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].nr != rows[j].nr {
			return rows[i].nr < rows[j].nr
		}
		return len(rows[i].rule.Args) == 0 && len(rows[j].rule.Args) != 0
	})
	for i := 1; i < len(rows); i++ {
		if rows[i].nr == rows[i-1].nr && rows[i].rule.Errno != rows[i-1].rule.Errno {
			return nil, nil, fmt.Errorf("resolve %s: rules disagree on the action", rows[i].name)
		}
	}
	var miss []string
	for n := range missing {
		miss = append(miss, n)
	}
	sort.Strings(miss)
	return rows, miss, nil
}

// comment returns text as // lines of at most 80 columns after indent.
func comment(indent, text string) string {
	var b strings.Builder
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > 77 {
			b.WriteString(indent + "// " + line + "\n")
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	b.WriteString(indent + "// " + line + "\n")
	return b.String()
}

// Generate returns the gofmt'd source of package seccomp's generated
// seccomp table for every GOARCH in GOARCHes.
func Generate(m Modules) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("// Code generated by build/sandbox/seccomp/internal/seccompgen; DO NOT EDIT.\n\n")
	b.WriteString(comment("", fmt.Sprintf("From github.com/moby/profiles/seccomp %s and golang.org/x/sys %s.", m.ProfilesVersion, m.SysVersion)))
	b.WriteString("\npackage seccomp\n\n")
	b.WriteString(comment("", "seccompDefaultProfile returns Docker's default seccomp profile evaluated for goarch and Docker's default capabilities ("+
		strings.Join(DefaultCapabilities, ", ")+"), and false for an architecture without a table."))
	b.WriteString("func seccompDefaultProfile(goarch string) (seccompProfile, bool) {\n\tswitch goarch {\n")
	for _, goarch := range GOARCHes {
		rules, defErrno, list, err := Evaluate(seccomp.DefaultProfile(), goarch, DefaultCapabilities)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "\tcase %q:\n\t\treturn seccompProfile{defaultErrno: %d, abis: []seccompABI{\n", goarch, defErrno)
		for _, abi := range list {
			table, err := Numbers(m.SysDir, abi.Arch)
			if err != nil {
				return nil, err
			}
			rows, miss, err := resolve(rules, table)
			if err != nil {
				return nil, err
			}
			if len(miss) > 0 {
				b.WriteString(comment("\t\t\t", fmt.Sprintf("Not %s calls: %s.", abi.Name, strings.Join(miss, ", "))))
			}
			fmt.Fprintf(&b, "\t\t\t{name: %q, audit: %#x, arg32: %t, calls: []seccompCall{\n", abi.Name, abi.Audit, abi.Arg32)
			for _, r := range rows {
				fmt.Fprintf(&b, "\t\t\t\t{nr: %d, name: %q", r.nr, r.name)
				if r.rule.Errno != 0 {
					fmt.Fprintf(&b, ", errno: %d", r.rule.Errno)
				}
				if r.rule.MinKernel != [2]uint8{} {
					fmt.Fprintf(&b, ", minKernel: [2]uint8{%d, %d}", r.rule.MinKernel[0], r.rule.MinKernel[1])
				}
				if len(r.rule.Args) > 0 {
					b.WriteString(", args: []seccompArg{")
					for i, a := range r.rule.Args {
						if i > 0 {
							b.WriteString(", ")
						}
						fmt.Fprintf(&b, "{index: %d, op: %s, value: %#x, valueTwo: %#x}", a.Index, opNames[a.Op], a.Value, a.ValueTwo)
					}
					b.WriteString("}")
				}
				b.WriteString("},\n")
			}
			b.WriteString("\t\t\t}},\n")
		}
		b.WriteString("\t\t}}, true\n")
	}
	b.WriteString("\t}\n\treturn seccompProfile{}, false\n}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("format generated table: %w", err)
	}
	return src, nil
}

// LookupABI returns the ABI of a profile architecture.
func LookupABI(arch specs.Arch) (ABI, bool) {
	a, ok := abis[arch]
	return a, ok
}

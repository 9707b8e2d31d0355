package seccompgen

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"

	"builder/internal/testenv"
)

// TestGeneratedTableFresh regenerates package seccomp's table from the
// pinned moby/profiles and x/sys versions and compares it with the
// committed file; run `go generate ./build/sandbox/seccomp` when it fails.
func TestGeneratedTableFresh(t *testing.T) {
	m, err := FindModules(".")
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../seccomp_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("build/sandbox/seccomp/seccomp_gen.go is stale: run go generate ./build/sandbox/seccomp")
	}
}

// TestX32Numbers checks the derived x32 table against the kernel's
// unistd_x32.h where the Linux headers are installed.
func TestX32Numbers(t *testing.T) {
	f, err := os.Open("/usr/include/x86_64-linux-gnu/asm/unistd_x32.h")
	if err != nil {
		testenv.Skip(t, "no x32 kernel header (linux-libc-dev): %v", err)
	}
	defer f.Close()
	m, err := FindModules(".")
	if err != nil {
		t.Fatal(err)
	}
	table, err := Numbers(m.SysDir, specs.ArchX32)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^#define __NR_(\w+) \(__X32_SYSCALL_BIT \+ (\d+)\)`)
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		sub := re.FindStringSubmatch(sc.Text())
		if sub == nil {
			continue
		}
		nr, _ := strconv.Atoi(sub[2])
		n++
		// The header may be older than x/sys, never newer.
		if got, ok := table[sub[1]]; !ok || got != X32Bit|uint32(nr) {
			t.Errorf("x32 %s = %#x (present %t), header says %#x", sub[1], got, ok, X32Bit|nr)
		}
	}
	if n < 300 {
		t.Fatalf("read only %d numbers from the header", n)
	}
}

// TestEvaluate checks the evaluation against the profile's documented
// behaviour for the default capabilities and for CAP_SYS_ADMIN.
func TestEvaluate(t *testing.T) {
	allowed := func(rules []Rule, name string) (uncond, cond bool, errno uint32) {
		for _, r := range rules {
			for _, n := range r.Names {
				if n != name {
					continue
				}
				if r.Errno != 0 {
					errno = r.Errno
				} else if len(r.Args) == 0 {
					uncond = true
				} else {
					cond = true
				}
			}
		}
		return
	}
	tests := []struct {
		name, call   string
		caps         []string
		uncond, cond bool
		errno        uint32
	}{
		{"read", "read", DefaultCapabilities, true, false, 0},
		{"mount needs sys_admin", "mount", DefaultCapabilities, false, false, 0},
		{"mount with sys_admin", "mount", append([]string{"CAP_SYS_ADMIN"}, DefaultCapabilities...), true, false, 0},
		{"clone flags", "clone", DefaultCapabilities, false, true, 0},
		{"clone with sys_admin", "clone", []string{"CAP_SYS_ADMIN"}, true, false, 0},
		{"clone3 enosys", "clone3", DefaultCapabilities, false, false, 38},
		{"chroot", "chroot", DefaultCapabilities, true, false, 0},
		{"chroot without cap", "chroot", nil, false, false, 0},
		{"arch_prctl", "arch_prctl", DefaultCapabilities, true, false, 0},
		{"socket", "socket", DefaultCapabilities, false, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, def, _, err := Evaluate(seccomp.DefaultProfile(), "amd64", tt.caps)
			if err != nil {
				t.Fatal(err)
			}
			if def != 1 {
				t.Errorf("default errno %d, want EPERM", def)
			}
			u, c, e := allowed(rules, tt.call)
			if u != tt.uncond || c != tt.cond || e != tt.errno {
				t.Errorf("%s: unconditional %t, conditional %t, errno %d; want %t, %t, %d", tt.call, u, c, e, tt.uncond, tt.cond, tt.errno)
			}
		})
	}
}

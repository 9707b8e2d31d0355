package binfmt

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/buildtest"
	"builder/internal/testenv"
)

// TestELFHeaderMatchesDebianRules checks the ELF header of every
// architecture against the magic and mask of Debian's qemu-user-static
// rule for it (testdata/binfmt.d, copied from /usr/lib/binfmt.d), and
// against no other architecture's rule.
func TestELFHeaderMatchesDebianRules(t *testing.T) {
	rules, err := ReadRules("testdata/binfmt.d")
	if err != nil {
		t.Fatal(err)
	}
	handlers := map[string]Handler{}
	for _, r := range rules {
		h, err := parseRule(r)
		if err != nil {
			t.Fatal(err)
		}
		handlers[r.Name] = h
	}
	for arch, rule := range map[string]string{
		"arm64": "qemu-aarch64", "arm": "qemu-arm", "riscv64": "qemu-riscv64", "s390x": "qemu-s390x",
		"ppc64le": "qemu-ppc64le", "ppc64": "qemu-ppc64", "mips64le": "qemu-mips64el", "mips64": "qemu-mips64",
		"loong64": "qemu-loongarch64", "amd64": "qemu-x86_64",
	} {
		header, ok := ELFHeader(arch)
		if !ok {
			t.Fatalf("no header for %s", arch)
		}
		for name, h := range handlers {
			if got := h.matches(header); got != (name == rule) {
				t.Errorf("%s header: rule %s matches = %v", arch, name, got)
			}
		}
	}
	if _, ok := ELFHeader("sparc"); ok {
		t.Error("header for an unknown architecture")
	}
}

// TestFind reads a binfmt_misc look-alike (testdata/misc) with a fixed
// aarch64 handler, an arm handler without F and a disabled riscv64 one.
func TestFind(t *testing.T) {
	hs, err := Read("testdata/misc")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 3 {
		t.Fatalf("read %d handlers: %+v", len(hs), hs)
	}
	for _, tc := range []struct {
		arch, handler, err string
	}{
		{"arm64", "qemu-aarch64", ""},
		{"arm", "", "has no F flag"},
		{"riscv64", "", "install Debian's qemu-user-static and run 'builder emulators --install'"},
		{"s390x", "", "no binfmt_misc handler"},
		{"sparc", "", "unknown architecture"},
	} {
		h, err := Find(hs, v1.Platform{OS: "linux", Architecture: tc.arch})
		if tc.err == "" {
			if err != nil || h.Name != tc.handler || h.Interpreter != "/usr/libexec/qemu-binfmt/aarch64-binfmt-P" {
				t.Errorf("%s: %+v, %v", tc.arch, h, err)
			}
			continue
		}
		if !errors.Is(err, ErrNoEmulator) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err = %v, want %q", tc.arch, err, tc.err)
		}
	}
	if _, err := Find(hs, v1.Platform{OS: "windows", Architecture: "arm64"}); !errors.Is(err, ErrNoEmulator) {
		t.Errorf("windows: %v", err)
	}
	if got := SortedNames(Platforms(hs)); !slices.Equal(got, []string{"linux/arm64"}) {
		t.Errorf("Platforms = %v", got)
	}
}

// TestReadUnmounted: a directory without binfmt_misc (no status file)
// or with it disabled has no handlers; a handler file with a bad magic
// is an error.
func TestReadUnmounted(t *testing.T) {
	if hs, err := Read(t.TempDir()); err != nil || len(hs) != 0 {
		t.Errorf("unmounted: %v %v", hs, err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "status"), []byte("disabled\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "qemu-aarch64"), []byte("enabled\nflags: F\nmagic 7f45\n"), 0o644)
	if hs, err := Read(dir); err != nil || len(hs) != 0 {
		t.Errorf("disabled: %v %v", hs, err)
	}
	os.WriteFile(filepath.Join(dir, "status"), []byte("enabled\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "qemu-aarch64"), []byte("enabled\nflags: F\nmagic 7fzz\n"), 0o644)
	if _, err := Read(dir); err == nil {
		t.Error("bad magic read")
	}
}

// TestRegister registers into a look-alike, whose register file keeps
// the last rule written: rules it has and the host's own are skipped.
func TestRegister(t *testing.T) {
	dir := t.TempDir()
	for n, data := range map[string]string{"status": "enabled\n", "register": ""} {
		os.WriteFile(filepath.Join(dir, n), []byte(data), 0o644)
	}
	b, _ := os.ReadFile("testdata/misc/qemu-aarch64")
	os.WriteFile(filepath.Join(dir, "qemu-aarch64"), b, 0o644)
	rules, err := ReadRules("testdata/binfmt.d")
	if err != nil {
		t.Fatal(err)
	}
	done, err := Register(dir, rules)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(done, "qemu-aarch64") || len(done) != len(rules)-2 {
		t.Errorf("registered %v of %d rules", done, len(rules))
	}
	if runtime.GOARCH == "amd64" && slices.Contains(done, "qemu-x86_64") {
		t.Error("registered the host's own architecture")
	}
	last, _ := os.ReadFile(filepath.Join(dir, "register"))
	if !strings.HasPrefix(string(last), ":qemu-") || !strings.Contains(string(last), ":M::") {
		t.Errorf("register got %q", last)
	}
}

// TestMachineRunsArm64 checks the real path on this machine: the kernel's
// binfmt_misc (which .ci/run sets up with 'builder emulators --install')
// has a fixed handler for arm64, and Debian's arm64 busybox runs through
// it, printing aarch64.
func TestMachineRunsArm64(t *testing.T) {
	testenv.RequireRoot(t)
	hs, err := Read(Dir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Find(hs, v1.Platform{OS: "linux", Architecture: "arm64"})
	if err != nil {
		testenv.Skip(t, "%v", err)
	}
	if _, err := os.Stat(h.Interpreter); err != nil {
		t.Errorf("interpreter of %s: %v", h.Name, err)
	}
	bb := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(bb, buildtest.ForeignBusybox(t, "arm64"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bb, "uname", "-m").Output()
	if err != nil || strings.TrimSpace(string(out)) != "aarch64" {
		t.Errorf("arm64 busybox uname -m: %q, %v", out, err)
	}
}

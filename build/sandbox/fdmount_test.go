package sandbox

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// hostCanary makes a host directory holding a file "canary" and returns it
// with a check that it holds nothing else and the file is unchanged.
func hostCanary(t *testing.T) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "canary"), []byte("untouched\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, func() {
		t.Helper()
		ents, _ := os.ReadDir(dir)
		b, _ := os.ReadFile(filepath.Join(dir, "canary"))
		if len(ents) != 1 || string(b) != "untouched\n" {
			t.Errorf("the host canary directory changed: %d entries, canary %q", len(ents), b)
		}
	}
}

// hostileRoot makes a root directory whose entries try to lead out of it:
// "abs" and "up" are symlinks to "/" and "../../..", "canary" an absolute
// symlink to the host directory canary, "file" a regular file, and "proc"
// a procfs mount (detached when the test ends), whose "self" leads to the
// magic links of /proc/PID.
func hostileRoot(t *testing.T, canary string) string {
	t.Helper()
	root := t.TempDir()
	for name, target := range map[string]string{"abs": "/", "up": "../../..", "canary": canary} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(root, "proc"), unix.MNT_DETACH) })
	return root
}

// TestEnsureStaysInRoot resolves and creates mountpoints in a hostile root:
// symlinks to "/", "..", absolute symlinks to a host directory and links in
// /proc must resolve inside the root or fail, the stubs are created there
// and cleanup removes them again.
func TestEnsureStaysInRoot(t *testing.T) {
	needRoot(t)
	canary, check := hostCanary(t)
	tests := []struct {
		target  string
		dir     bool
		want    string // resolved root-relative path
		errHas  string
		created []string
	}{
		{target: "/abs/x", dir: true, want: "/x", created: []string{"/x"}},
		{target: "/up/up/x/y", dir: false, want: "/x/y", created: []string{"/x", "/x/y"}},
		{target: "/../../../x", dir: true, want: "/x", created: []string{"/x"}},
		{target: "/canary/new", dir: true, want: canary + "/new"},
		{target: "/canary/canary", dir: false, want: canary + "/canary"},
		{target: "/abs", dir: true, errHas: "resolves to the root directory"},
		{target: "/file/x", dir: true, errHas: "/file is not a directory"},
		{target: "/file", dir: true, errHas: "/file is not a directory"},
		{target: "/x", dir: false, errHas: "/x is a directory"},
		{target: "/proc/self/root/x", dir: true, errHas: "refusing to follow a link in /proc"},
		{target: "/proc/self/cwd", dir: true, errHas: "refusing to follow a link in /proc"},
		{target: "/proc/1/root", dir: true, errHas: "refusing to follow a link in /proc"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			root := hostileRoot(t, canary)
			if tt.target == "/x" {
				os.Mkdir(filepath.Join(root, "x"), 0o755)
			}
			s := newStubs(root, "")
			f, rel, err := s.ensure(tt.target, tt.dir)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("ensure = %q, %v; want error %q", rel, err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if rel != tt.want {
				t.Errorf("resolved to %q, want %q", rel, tt.want)
			}
			// The fd is the file inside the root.
			var got, want unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &got); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lstat(filepath.Join(root, tt.want), &want); err != nil {
				t.Fatalf("%s is not in the root: %v", tt.want, err)
			}
			if got.Ino != want.Ino || got.Dev != want.Dev {
				t.Errorf("fd is not %s in the root", tt.want)
			}
			if tt.created != nil && strings.Join(s.created, ",") != strings.Join(tt.created, ",") {
				t.Errorf("created %q, want %q", s.created, tt.created)
			}
			f.Close()
			s.cleanup()
			for _, c := range s.created {
				if _, err := os.Lstat(filepath.Join(root, c)); err == nil {
					t.Errorf("cleanup left %s", c)
				}
			}
		})
	}
	check()
}

// TestOpenSourceStaysInRoot resolves bind sources inside a hostile root:
// they must never be opened outside it, and magic links are refused.
func TestOpenSourceStaysInRoot(t *testing.T) {
	needRoot(t)
	canary, check := hostCanary(t)
	root := hostileRoot(t, canary)
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		source string
		want   string // path in root it must be, "" for an error
	}{
		{"", "."},
		{"abs", "."},
		{"up/etc", "etc"},
		{"../../../etc", "etc"},
		{"/abs/file", "file"},
		{"canary/canary", ""},         // the host canary is not in the root
		{"proc/self/root/etc", ""},    // a magic link
		{"proc/self/fd/0", ""},        // a magic link
		{"proc/thread-self/root", ""}, // a magic link
	}
	for _, tt := range tests {
		t.Run(tt.source, func(t *testing.T) {
			f, err := openSource(Mount{Type: "bind", Root: root, Source: tt.source})
			if tt.want == "" {
				if err == nil {
					f.Close()
					t.Fatalf("opened %s", f.Name())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var got, want unix.Stat_t
			unix.Fstat(int(f.Fd()), &got)
			if err := unix.Lstat(filepath.Join(root, tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if got.Ino != want.Ino || got.Dev != want.Dev {
				t.Errorf("opened something other than %s in the root", tt.want)
			}
		})
	}
	check()
}

// TestRunMountsStayInRoot runs a command whose --mount targets lead
// through symlinks in the root filesystem to "/" and to a host directory,
// with a bind source that climbs out of its root: each mount lands inside
// the root, is nosuid and nodev, and the host directory is unchanged.
func TestRunMountsStayInRoot(t *testing.T) {
	needRoot(t)
	canary, check := hostCanary(t)
	rootfs := newRootfs(t)
	for name, target := range map[string]string{"abs": "/", "host": canary} {
		if err := os.Symlink(target, filepath.Join(rootfs, name)); err != nil {
			t.Fatal(err)
		}
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("from source\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, stderr bytes.Buffer
	err := Run(context.Background(), Spec{
		Root: bindRoot(rootfs),
		Args: sh(`cat /m1/f; cat /host/m2/f; ls /m3; ` +
			`for m in /m1 "$M2" /m3; do grep " $m " /proc/self/mountinfo | grep -c "nosuid,nodev"; done`),
		Env: []string{"M2=" + canary + "/m2"},
		Mounts: []Mount{
			{Type: "bind", Root: src, Source: "../../..", Target: "/abs/m1", ReadOnly: true},
			{Type: "bind", Root: src, Source: "/", Target: "/host/m2"},
			{Type: "tmpfs", Target: "/abs/abs/m3"},
		},
		TempDir: t.TempDir(),
		Stdout:  &out, Stderr: &stderr,
	})
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr.String())
	}
	if want := "from source\nfrom source\n1\n1\n1\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	check()
	for _, p := range []string{"m1", "m3", strings.Split(canary, "/")[1]} {
		if _, err := os.Lstat(filepath.Join(rootfs, p)); err == nil && p != "tmp" {
			t.Errorf("mountpoint stub /%s left in the root", p)
		}
	}
	if _, err := os.Lstat(filepath.Join(rootfs, canary)); err == nil {
		t.Errorf("mountpoint stub %s left in the root", canary)
	}
}

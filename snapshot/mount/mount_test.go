package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"builder/internal/testenv"
)

func needRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
}

// checkNoMounts fails the test if the host namespace has a mount below dir.
func checkNoMounts(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), dir) {
		t.Errorf("mount below %s visible in host namespace:\n%s", dir, b)
	}
}

func TestWithMountsPrivate(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	mnt := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	var tid int
	err := WithMounts(context.Background(), mnt, [][]Mount{
		{{Type: "bind", Source: src, Options: []string{"rbind"}}},
		{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}},
	}, func(roots []string) error {
		tid = unix.Gettid()
		b, err := os.ReadFile(filepath.Join(roots[0], "f"))
		if err != nil || string(b) != "hi" {
			return fmt.Errorf("read through mount: %q, %v", b, err)
		}
		if err := os.WriteFile(filepath.Join(roots[1], "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("write to ro mount: got %v, want EROFS", err)
		}
		own, err := os.ReadFile("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		if !strings.Contains(string(own), roots[0]) {
			return fmt.Errorf("mount missing from own namespace")
		}
		// Another goroutine runs on another thread: the host namespace.
		other := make(chan error)
		go func() {
			ents, err := os.ReadDir(roots[0])
			if err == nil && len(ents) != 0 {
				err = fmt.Errorf("other thread sees %d entries in mount root", len(ents))
			}
			other <- err
		}()
		if err := <-other; err != nil {
			return err
		}
		checkNoMounts(t, mnt)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkNoMounts(t, mnt)
	ents, _ := os.ReadDir(mnt)
	if len(ents) != 0 {
		t.Errorf("mount dirs left: %v", ents)
	}
	// The locked thread must have exited, taking the namespace with it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace thread %d still alive", tid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWithMountsErrorsAndPanics(t *testing.T) {
	needRoot(t)
	src, mnt := t.TempDir(), t.TempDir()
	boom := errors.New("boom")
	tests := []struct {
		name string
		sets [][]Mount
		fn   func([]string) error
		want string
	}{
		{"fn error", [][]Mount{{{Type: "bind", Source: src}}}, func([]string) error { return boom }, "boom"},
		{"bad mount", [][]Mount{{{Type: "bind", Source: src}}, {{Type: "bind", Source: filepath.Join(src, "missing")}}},
			func([]string) error { return nil }, "no such file"},
		{"empty set", [][]Mount{{}}, func([]string) error { return nil }, "no mounts"},
		{"panic", [][]Mount{{{Type: "bind", Source: src}}}, func([]string) error { panic("kaboom") }, "kaboom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			func() {
				defer func() {
					if v := recover(); v != nil {
						err = fmt.Errorf("%v", v)
					}
				}()
				err = WithMounts(context.Background(), mnt, tc.sets, tc.fn)
			}()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			checkNoMounts(t, mnt)
			if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
				t.Errorf("mount dirs left: %v", ents)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WithMounts(ctx, mnt, nil, func([]string) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: got %v", err)
	}
}

// TestLongOverlayOptions mounts an overlay whose options exceed a page, which
// works only through the relative-path rewrite.
func TestLongOverlayOptions(t *testing.T) {
	needRoot(t)
	long := strings.Repeat("d", 200)
	base := filepath.Join(t.TempDir(), long, long, long)
	var lowers []string
	for i := range 60 {
		l := filepath.Join(base, fmt.Sprintf("l%03d", i))
		if err := os.MkdirAll(l, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(l, fmt.Sprintf("f%03d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, l)
	}
	m := Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Join(lowers, ":")}}
	if _, data := m.parse(); len(data) < pageSize {
		t.Fatalf("options only %d bytes; test needs more than a page", len(data))
	}
	mnt := t.TempDir()
	if err := m.To(mnt, false); err == nil {
		_ = Unmount(mnt)
		t.Fatal("long options accepted without relativeOK")
	}
	err := WithMounts(context.Background(), mnt, [][]Mount{{m}}, func(roots []string) error {
		ents, err := os.ReadDir(roots[0])
		if err != nil {
			return err
		}
		if len(ents) != 60 {
			return fmt.Errorf("merged view has %d entries, want 60", len(ents))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkNoMounts(t, mnt)
}

// TestKilledProcessLeaksNoMount SIGKILLs a process in the middle of
// WithMounts and checks the host namespace holds no mount afterwards.
func TestKilledProcessLeaksNoMount(t *testing.T) {
	needRoot(t)
	if dir := os.Getenv("MOUNT_TEST_HELPER"); dir != "" {
		src := os.Getenv("MOUNT_TEST_SRC")
		_ = WithMounts(context.Background(), dir, [][]Mount{{{Type: "bind", Source: src}}}, func(roots []string) error {
			fmt.Println("mounted")
			time.Sleep(time.Minute)
			return nil
		})
		os.Exit(0)
	}
	src, mnt := t.TempDir(), t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledProcessLeaksNoMount$")
	cmd.Env = append(os.Environ(), "MOUNT_TEST_HELPER="+mnt, "MOUNT_TEST_SRC="+src)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf) != "mounted" {
		_ = cmd.Process.Kill()
		t.Fatalf("helper did not mount: %q %v", buf, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	checkNoMounts(t, mnt)
	b, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(b), "builder-mnt-") {
		t.Errorf("a builder-mnt mount survives the process")
	}
}

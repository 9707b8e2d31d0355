package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// TestWriteFile checks content and exact mode, whatever the umask, for a
// new file and a replaced one.
func TestWriteFile(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	p := filepath.Join(t.TempDir(), "f")
	for _, c := range []struct {
		data string
		perm fs.FileMode
	}{{"one", 0o644}, {"two", 0o600}, {"three", 0o755}, {"four", 0o640}} {
		write := WriteFile
		switch c.perm { // the same but for syncs
		case 0o600:
			write = WriteFileNoSync
		case 0o640:
			write = WriteFileSyncData
		}
		if err := write(p, []byte(c.data), c.perm); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != c.perm {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), c.perm)
		}
		if dt, _ := os.ReadFile(p); string(dt) != c.data {
			t.Errorf("content %q, want %q", dt, c.data)
		}
	}
	assertNoTemp(t, p)
}

// TestWriteFails checks that a failing writer leaves the old file and no
// temporary file behind.
func TestWriteFails(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Write(p, 0o644, func(w io.Writer) error {
		w.Write([]byte("half"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
	if dt, _ := os.ReadFile(p); string(dt) != "old" {
		t.Fatalf("content %q after a failed write, want %q", dt, "old")
	}
	assertNoTemp(t, p)
}

// TestConcurrentWriters checks that writers of one path do not share a
// temporary file: each succeeds and the file holds one whole write.
func TestConcurrentWriters(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	want := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		data := string(rune('a'+i)) + "0123456789abcdef"
		want[data] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Write(p, 0o600, func(w io.Writer) error {
				for _, c := range []byte(data) { // byte by byte, to interleave
					if _, err := w.Write([]byte{c}); err != nil {
						return err
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if dt, _ := os.ReadFile(p); !want[string(dt)] {
		t.Fatalf("content %q is not one writer's", dt)
	}
	assertNoTemp(t, p)
}

func assertNoTemp(t *testing.T, p string) {
	t.Helper()
	if m, _ := filepath.Glob(TempPattern(p)); len(m) > 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}

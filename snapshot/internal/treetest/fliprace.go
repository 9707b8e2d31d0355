package treetest

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// DiffFlipRace diffs an active snapshot while another goroutine keeps
// exchanging (renameat2 RENAME_EXCHANGE) its directory d with a symlink to
// a host directory holding a secret, as a process left behind by a RUN
// could. upper is the directory the snapshot's changes are written to, and
// diff writes the snapshot's diff. A walk by path strings sometimes lists
// and reads the host directory through the symlink; a walk through
// directory descriptors never does: each diff either fails or holds only
// what the snapshot holds.
func DiffFlipRace(t *testing.T, upper string, diff func(io.Writer) error) {
	t.Helper()
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "secret"), []byte("host secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, x := filepath.Join(upper, "d"), filepath.Join(upper, "x")
	if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "mine"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, x); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = unix.Renameat2(unix.AT_FDCWD, d, unix.AT_FDCWD, x, unix.RENAME_EXCHANGE)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	failed := 0
	for i := 0; i < 300; i++ {
		var buf bytes.Buffer
		if err := diff(&buf); err != nil {
			failed++
			continue
		}
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(h.Name) == "secret" {
				t.Fatalf("iteration %d: the layer holds %s from the host directory", i, h.Name)
			}
		}
	}
	t.Logf("%d of 300 diffs failed while d flipped", failed)
}

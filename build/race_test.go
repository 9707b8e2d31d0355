package build

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"builder/build/buildtest"
	"builder/build/copier"
	"builder/snapshot/archive"
)

// raceTar is a layer that writes through the directory d: d/, d/sub/,
// d/sub/file and d/file.
func raceTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "d/sub/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "d/sub/file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 6},
		{Name: "d/file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 6},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("PWNED\n"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSymlinkFlipRace runs COPY (copier.Copy), ADD of a local archive
// (copier.Copy with Extract) and layer extraction (archive.Apply) in loops
// while another goroutine flips the destination directory d between a real
// directory and a symlink to a host canary directory. Whatever the
// interleaving, no write may land in the canary: every path is resolved on
// file descriptors inside the root. The loops are bounded, so the test
// ends whether or not a window was hit; a failure is a real escape.
func TestSymlinkFlipRace(t *testing.T) {
	buildtest.RequireRoot(t)
	layer := raceTar(t)
	src := t.TempDir()
	for name, data := range map[string][]byte{"f.txt": []byte("PWNED\n"), "l.tar": layer, "tree/g.txt": []byte("PWNED\n")} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	extract := func(dir string, r io.Reader) error {
		_, err := archive.Apply(dir, r)
		return err
	}
	ctx := context.Background()
	tests := []struct {
		name string
		op   func(root string) error
	}{
		{"copy", func(root string) error {
			return copier.Copy(ctx, copier.Source{Root: src}, root,
				copier.Request{Sources: []string{"f.txt", "tree"}, Dest: "/d/sub/"})
		}},
		{"apply", func(root string) error {
			_, err := archive.Apply(root, bytes.NewReader(layer))
			return err
		}},
		{"add", func(root string) error {
			return copier.Copy(ctx, copier.Source{Root: src}, root,
				copier.Request{Sources: []string{"l.tar"}, Dest: "/d/", Add: true, Extract: extract})
		}},
	}
	const iterations = 400
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			canary, check := canaryDir(t)
			root := t.TempDir()
			d := filepath.Join(root, "d")
			stop := make(chan struct{})
			flipped := make(chan struct{})
			go func() {
				defer close(flipped)
				for {
					select {
					case <-stop:
						return
					default:
					}
					_ = os.RemoveAll(d) // a symlink is removed, not followed
					_ = os.Symlink(canary, d)
					_ = os.Remove(d)
					_ = os.Mkdir(d, 0o755)
				}
			}()
			failed := 0
			for range iterations {
				if tc.op(root) != nil {
					failed++
				}
			}
			close(stop)
			<-flipped
			t.Logf("%d of %d iterations failed (expected while d flips)", failed, iterations)
			// Some iterations must have written, or the test proved nothing.
			if failed == iterations {
				t.Errorf("never succeeded")
			}
			check()
			if t.Failed() {
				filepath.Walk(canary, func(p string, fi os.FileInfo, err error) error {
					if err == nil {
						t.Logf("canary holds %s %v", p, fi.Mode())
					}
					return nil
				})
			}
		})
	}
}

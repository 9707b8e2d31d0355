package naive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"builder/snapshot/archive"
)

// TestDiffNeverFollowsOldSymlink diffs a tree in which a RUN replaced the
// parent's symlink "a -> <host dir>" with a directory of the same shape.
// The old side must read as empty below "a": following the link would
// list the host directory (its names would become whiteouts in the layer)
// and compare the new files with the host's (an identical one would be
// left out of the layer).
func TestDiffNeverFollowsOldSymlink(t *testing.T) {
	tmp := t.TempDir()
	host, old, cur := filepath.Join(tmp, "host"), filepath.Join(tmp, "old"), filepath.Join(tmp, "new")
	mtime := time.Unix(1700000000, 0)
	for _, d := range []string{filepath.Join(host, "sub"), old, filepath.Join(cur, "a", "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{
		filepath.Join(host, "sub", "secret-name"),
		filepath.Join(host, "sub", "same"),
		filepath.Join(cur, "a", "sub", "same"),
	} {
		if err := os.WriteFile(f, []byte("same"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(host, filepath.Join(old, "a")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	d := &differ{ctx: context.Background(), aw: archive.NewWriter(&buf, nil)}
	oldDir, err := openDir(old)
	if err != nil {
		t.Fatal(err)
	}
	defer oldDir.Close()
	curDir, err := openDir(cur)
	if err != nil {
		t.Fatal(err)
	}
	defer curDir.Close()
	if err := d.walk(curDir, oldDir, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.aw.Close(); err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	want := []string{"a/", "a/sub/", "a/sub/same"}
	if !slices.Equal(names, want) {
		t.Errorf("layer entries = %q, want %q", names, want)
	}
}

package copier

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/snapshot/archive"
)

// applyExtract is the extractor the build uses for ADD (build.extractArchive).
func applyExtract(dir string, r io.Reader) error {
	_, err := archive.Apply(dir, r)
	return err
}

// writeTar writes a tar of hdrs (regular files hold their own name) to p.
func writeTar(t *testing.T, p string, hdrs ...tar.Header) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = h.Name
			h.Size = int64(len(body))
		}
		if h.Mode == 0 {
			h.Mode = 0o755
		}
		must(t, tw.WriteHeader(&h))
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	must(t, tw.Close())
	must(t, os.WriteFile(p, buf.Bytes(), 0o644))
}

// TestADDHostileArchive adds local archives whose entries climb out, write
// through symlinks out of the destination or hard link to a host file, into
// destinations that are themselves reached through symlinks out of the
// root. Each archive is extracted inside the destination directory or
// refused; the host directory next to the root stays empty.
func TestADDHostileArchive(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name    string
		dest    string
		entries func(outside string) []tar.Header
		want    []string // below the root
		wantErr string
	}{
		{name: "dotdot", dest: "/abs/d/", entries: func(string) []tar.Header {
			return []tar.Header{{Name: "../../../../x", Typeflag: tar.TypeReg}}
		}, wantErr: "escapes the layer root"},
		{name: "absolute", dest: "/host/", entries: func(o string) []tar.Header {
			return []tar.Header{{Name: o + "/x", Typeflag: tar.TypeReg}}
		}, want: []string{"HOST/HOST/x"}},
		{name: "symlink to /", dest: "/climb/d", entries: func(o string) []tar.Header {
			return []tar.Header{
				{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"},
				{Name: "l" + o + "/x", Typeflag: tar.TypeReg},
			}
		}, want: []string{"d/HOST/x", "d/l"}},
		{name: "chained symlinks", dest: "/chain/d", entries: func(o string) []tar.Header {
			return []tar.Header{
				{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "b/.."},
				{Name: "b", Typeflag: tar.TypeSymlink, Linkname: "../../../.."},
				{Name: "a/x", Typeflag: tar.TypeReg},
			}
		}, want: []string{"tmp/d/x", "tmp/d/a", "tmp/d/b"}}, // chain -> climb/tmp, climb -> the root
		{name: "hard link out", dest: "/dir/d", entries: func(o string) []tar.Header {
			return []tar.Header{{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../../../../outside/f"}}
		}, wantErr: "escapes the layer root"},
		{name: "whiteout through symlink", dest: "/dir/d", entries: func(o string) []tar.Header {
			return []tar.Header{
				{Name: "l", Typeflag: tar.TypeSymlink, Linkname: o},
				{Name: "l/.wh.f", Typeflag: tar.TypeReg},
			}
		}, want: []string{"dir/d/l"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, outside := hostileRoot(t)
			ctxDir := t.TempDir()
			writeTar(t, filepath.Join(ctxDir, "evil.tar"), tc.entries(outside)...)
			must(t, os.WriteFile(filepath.Join(outside, "f"), []byte("canary"), 0o644))
			err := Copy(context.Background(), Source{Root: ctxDir, IsContext: true}, root,
				Request{Sources: []string{"evil.tar"}, Dest: tc.dest, Add: true, Extract: applyExtract})
			ents, rerr := os.ReadDir(outside)
			must(t, rerr)
			if len(ents) != 1 {
				t.Fatalf("written outside the root: %v", ents)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "f")); string(b) != "canary" {
				t.Fatalf("host canary changed: %q", b)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ADD = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			h := strings.TrimPrefix(outside, "/")
			for _, p := range tc.want {
				p = strings.ReplaceAll(p, "HOST", h)
				if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
					t.Errorf("%s not in the root: %v", p, err)
				}
			}
		})
	}
}

package export

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// tarLayer stores a layer made of hdrs (regular files get their Name as
// content) and returns it.
func tarLayer(t *testing.T, s *content.Store, hdrs ...tar.Header) v1.Layer {
	t.Helper()
	info, err := s.WriteLayer(context.Background(), func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, h := range hdrs {
			body := ""
			if h.Typeflag == tar.TypeReg {
				body = h.Name
				h.Size = int64(len(body))
			}
			if h.Mode == 0 {
				h.Mode = 0o755
			}
			if err := tw.WriteHeader(&h); err != nil {
				return err
			}
			if _, err := io.WriteString(tw, body); err != nil {
				return err
			}
		}
		return tw.Close()
	}, content.LayerOptions{Compression: content.Gzip})
	if err != nil {
		t.Fatal(err)
	}
	return NewLayer(s, LayerDescFromInfo(info))
}

// TestOutputsHostileImage writes the root filesystem of an image whose
// first layer holds symlinks out of the root ("a -> /", an absolute one to
// a host directory, a relative one that climbs) and whose second layer
// writes files and whiteouts through them, as -o type=local and
// -o type=tar do. Everything lands inside the output's root; the host
// directory keeps its one file.
func TestOutputsHostileImage(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("canary"), 0o644); err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(outside, "/") // outside, as seen through "a -> /"
	img, err := mutate.AppendLayers(empty.Image,
		tarLayer(t, s,
			tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "/"},
			tar.Header{Name: "b", Typeflag: tar.TypeSymlink, Linkname: outside},
			tar.Header{Name: "c", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../.."},
		),
		tarLayer(t, s,
			tar.Header{Name: "a/" + rel + "/pwned-a", Typeflag: tar.TypeReg},
			tar.Header{Name: "b/pwned-b", Typeflag: tar.TypeReg},
			tar.Header{Name: "c/" + rel + "/pwned-c", Typeflag: tar.TypeReg},
			tar.Header{Name: "a/" + rel + "/.wh.keep", Typeflag: tar.TypeReg},
			tar.Header{Name: "b/.wh.keep", Typeflag: tar.TypeReg},
			tar.Header{Name: "link", Typeflag: tar.TypeLink, Linkname: "b/pwned-b"},
		),
	)
	if err != nil {
		t.Fatal(err)
	}
	// Every entry resolves inside the root: a and c lead to the root,
	// b to the outside path recreated below it.
	want := []string{rel + "/pwned-a", rel + "/pwned-b", rel + "/pwned-c", "link"}
	check := func(t *testing.T) {
		t.Helper()
		ents, err := os.ReadDir(outside)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "keep" {
			t.Fatalf("host directory changed: %v", ents)
		}
		if b, err := os.ReadFile(filepath.Join(outside, "keep")); err != nil || string(b) != "canary" {
			t.Fatalf("host canary changed: %q %v", b, err)
		}
	}
	t.Run("local", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "rootfs")
		if err := UnpackRootfs(context.Background(), dir, img); err != nil {
			t.Fatal(err)
		}
		check(t)
		for _, p := range want {
			if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
				t.Errorf("%s not in the output: %v", p, err)
			}
		}
	})
	t.Run("tar", func(t *testing.T) {
		var buf bytes.Buffer
		if err := WriteRootfsTar(context.Background(), &buf, img, t.TempDir()); err != nil {
			t.Fatal(err)
		}
		check(t)
		var names []string
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		for _, p := range want {
			if !slices.Contains(names, p) {
				t.Errorf("%s not in the tar: %q", p, names)
			}
		}
	})
}

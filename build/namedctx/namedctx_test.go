package namedctx

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	ocilayout "github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"builder/snapshot/content"
)

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

// writeLayout writes an OCI layout holding one random image tagged tag
// (and, for an index, that image inside an index for linux/amd64) and
// returns its directory and the image's manifest digest.
func writeLayout(t *testing.T, tag string, index bool) (string, v1.Hash) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := ocilayout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	ann := ocilayout.WithAnnotations(map[string]string{RefNameAnnotation: tag})
	if index {
		idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &amd64}})
		err = p.AppendIndex(idx, ann)
	} else {
		err = p.AppendImage(img, ann)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir, d
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	lay, d := writeLayout(t, "v1", false)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		spec string
		want Context // Name and Value are checked through Key
		err  string
	}{
		{spec: "src=" + dir, want: Context{Key: "docker.io/library/src:latest", Kind: Local, Path: dir}},
		{spec: "alpine=docker-image://127.0.0.1:5000/alpine:3", want: Context{Key: "docker.io/library/alpine:latest", Kind: Image, Ref: "127.0.0.1:5000/alpine:3"}},
		{spec: "docker.io/library/alpine:latest=docker-image://x", want: Context{Key: "docker.io/library/alpine:latest", Kind: Image, Ref: "x"}},
		{spec: "alpine:3.20=docker-image://x", want: Context{Key: "docker.io/library/alpine:3.20", Kind: Image, Ref: "x"}},
		{spec: "base=oci-layout://" + lay, want: Context{Key: "docker.io/library/base:latest", Kind: OCILayout, Path: lay, Tag: "latest"}},
		{spec: "base=oci-layout://" + lay + ":v1", want: Context{Key: "docker.io/library/base:latest", Kind: OCILayout, Path: lay, Tag: "v1"}},
		{spec: "base=oci-layout://" + lay + ":v1@" + d.String(), want: Context{Key: "docker.io/library/base:latest", Kind: OCILayout, Path: lay, Tag: "v1", Digest: d.String()}},
		{spec: "base=oci-layout://" + lay + "@" + d.String(), want: Context{Key: "docker.io/library/base:latest", Kind: OCILayout, Path: lay, Tag: "latest", Digest: d.String()}},
		{spec: "repo=https://example.invalid/r.git#main", want: Context{Key: "docker.io/library/repo:latest", Kind: Git, Ref: "https://example.invalid/r.git#main"}},
		{spec: "repo=git@example.invalid:o/r.git", want: Context{Key: "docker.io/library/repo:latest", Kind: Git, Ref: "git@example.invalid:o/r.git"}},
		{spec: "f=https://example.invalid/file.txt", want: Context{Key: "docker.io/library/f:latest", Kind: URL, Ref: "https://example.invalid/file.txt"}},
		{spec: "src", err: `want NAME=VALUE`},
		{spec: "src=", err: `want NAME=VALUE`},
		{spec: "=" + dir, err: `want NAME=VALUE`},
		{spec: "Bad Name=" + dir, err: `invalid context name`},
		{spec: "a@sha256:" + strings.Repeat("0", 64) + "=" + dir, err: `invalid context name`},
		{spec: "scratch=" + dir, err: `reserved`},
		{spec: "src=" + filepath.Join(dir, "missing"), err: `no such file`},
		{spec: "src=" + file, err: `is not a directory`},
		{spec: "x=docker-image://Not A Ref", err: `parse image name`},
		{spec: "x=oci-layout://" + dir, err: `is not an OCI layout`},
		{spec: "x=oci-layout://" + lay + "@sha256:abc", err: `oci-layout digest`},
		{spec: "x=oci-layout://" + lay + ":", err: `empty tag`},
		{spec: "x=target:other", err: `unsupported context source`},
		{spec: "x=s3://bucket/ctx", err: `unsupported context source`},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			c, err := Parse(tc.spec)
			if tc.err != "" {
				if err == nil || !regexp.MustCompile(tc.err).MatchString(err.Error()) {
					t.Fatalf("error %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.Name, c.Value = "", ""
			if c != tc.want {
				t.Fatalf("got %+v, want %+v", c, tc.want)
			}
		})
	}
}

// TestImportLayout imports by tag, by digest and through an index, then
// feeds ImportLayout hostile layouts: a broken index.json, a tag that is
// not there, a blob whose content does not match its digest, a blob that
// is a symlink out of the layout, a manifest of the wrong size. Each must
// fail and store no manifest.
func TestImportLayout(t *testing.T) {
	ctx := context.Background()
	store := func(t *testing.T) *content.Store {
		s, err := content.Open(filepath.Join(t.TempDir(), "store"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("ok", func(t *testing.T) {
		for _, index := range []bool{false, true} {
			dir, d := writeLayout(t, "v1", index)
			for _, c := range []Context{
				{Path: dir, Tag: "v1"},
				{Path: dir, Tag: "latest"}, // the only manifest
				{Path: dir, Digest: d.String()},
			} {
				s := store(t)
				got, err := ImportLayout(ctx, s, c, amd64)
				if err != nil {
					t.Fatalf("index %v %+v: %v", index, c, err)
				}
				if got != d || !s.Has(d) {
					t.Fatalf("index %v %+v: imported %s (stored %v), want %s", index, c, got, s.Has(got), d)
				}
			}
		}
	})
	blobOf := func(dir string, d v1.Hash) string { return filepath.Join(dir, "blobs", d.Algorithm, d.Hex) }
	layers := func(t *testing.T, dir string, d v1.Hash) (cfg v1.Hash, layer v1.Hash) {
		p, _ := ocilayout.FromPath(dir)
		img, err := p.Image(d)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		return m.Config.Digest, m.Layers[0].Digest
	}
	for _, tc := range []struct {
		name  string
		index bool
		c     func(dir string, d v1.Hash) Context
		harm  func(t *testing.T, dir string, d v1.Hash)
		err   string
	}{
		{name: "bad-index-json", harm: func(t *testing.T, dir string, _ v1.Hash) {
			os.WriteFile(filepath.Join(dir, "index.json"), []byte("{not json"), 0o644)
		}, err: `index.json: `},
		{name: "index-json-symlink-out", harm: func(t *testing.T, dir string, _ v1.Hash) {
			os.Remove(filepath.Join(dir, "index.json"))
			os.Symlink("/etc/hostname", filepath.Join(dir, "index.json"))
		}, err: `index.json`},
		{name: "tag-missing", c: func(dir string, _ v1.Hash) Context { return Context{Path: dir, Tag: "nope"} },
			harm: func(t *testing.T, dir string, _ v1.Hash) {
				// A second image, so the only-manifest fallback does not apply.
				p, _ := ocilayout.FromPath(dir)
				img, _ := random.Image(10, 1)
				p.AppendImage(img)
			}, err: `tag "nope" not found`},
		{name: "layer-digest-mismatch", harm: func(t *testing.T, dir string, d v1.Hash) {
			_, l := layers(t, dir, d)
			fi, _ := os.Stat(blobOf(dir, l))
			os.WriteFile(blobOf(dir, l), make([]byte, fi.Size()), 0o644) // same size, other bytes
		}, err: `digest`},
		{name: "layer-size-mismatch", harm: func(t *testing.T, dir string, d v1.Hash) {
			_, l := layers(t, dir, d)
			os.WriteFile(blobOf(dir, l), []byte("short"), 0o644)
		}, err: `5 bytes, the manifest says`},
		{name: "config-symlink-out", harm: func(t *testing.T, dir string, d v1.Hash) {
			cfg, _ := layers(t, dir, d)
			os.Remove(blobOf(dir, cfg))
			os.Symlink("../../../../../../../../etc/hostname", blobOf(dir, cfg))
		}, err: `blob sha256:`},
		{name: "manifest-tampered", harm: func(t *testing.T, dir string, d v1.Hash) {
			dt, _ := os.ReadFile(blobOf(dir, d))
			os.WriteFile(blobOf(dir, d), append(dt, ' '), 0o644)
		}, err: `content has digest`},
		{name: "digest-not-in-layout", c: func(dir string, _ v1.Hash) Context {
			return Context{Path: dir, Digest: "sha256:" + strings.Repeat("a", 64)}
		}, err: `no such file`},
		{name: "index-wrong-platform", index: true, c: func(dir string, _ v1.Hash) Context { return Context{Path: dir, Tag: "v1"} },
			harm: func(t *testing.T, dir string, d v1.Hash) {}, err: `no image for platform linux/arm64`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, d := writeLayout(t, "v1", tc.index)
			if tc.harm != nil {
				tc.harm(t, dir, d)
			}
			c := Context{Path: dir, Tag: "v1"}
			if tc.c != nil {
				c = tc.c(dir, d)
			}
			plat := amd64
			if tc.name == "index-wrong-platform" {
				plat = v1.Platform{OS: "linux", Architecture: "arm64"}
			}
			s := store(t)
			_, err := ImportLayout(ctx, s, c, plat)
			if err == nil || !regexp.MustCompile(tc.err).MatchString(err.Error()) {
				t.Fatalf("error %v, want %s", err, tc.err)
			}
			if s.Has(d) {
				t.Fatal("the manifest was stored though the import failed")
			}
		})
	}
}

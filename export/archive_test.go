package export

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"builder/internal/testenv"
	"builder/snapshot/content"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// untar extracts a tar of plain files and directories into dir.
func untar(t *testing.T, r io.Reader, dir string) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		p := filepath.Join(dir, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected entry %s type %c", hdr.Name, hdr.Typeflag)
		}
	}
}

func loadFixture(t *testing.T, s *content.Store, compressions ...string) (v1.Image, v1.Hash) {
	t.Helper()
	d := fixtureImage(t, s, compressions...)
	img, err := LoadImage(s, d)
	if err != nil {
		t.Fatal(err)
	}
	return img, d
}

func TestWriteOCIArchive(t *testing.T) {
	s := openStore(t)
	img, d := loadFixture(t, s, content.Gzip, content.Gzip)
	m, _ := img.Manifest()

	var buf bytes.Buffer
	if err := WriteOCIArchive(context.Background(), &buf, img, "docker.io/library/app:latest"); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := WriteOCIArchive(context.Background(), &again, img, "docker.io/library/app:latest"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two archives of one image differ")
	}

	dir := t.TempDir()
	names := untar(t, bytes.NewReader(buf.Bytes()), dir)
	want := []string{
		"blobs/", "blobs/sha256/", "oci-layout",
		"blobs/sha256/" + m.Config.Digest.Hex,
		"blobs/sha256/" + m.Layers[0].Digest.Hex, // the duplicate layer once
		"blobs/sha256/" + d.Hex,
		"index.json",
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("entries = %v\nwant %v", names, want)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, _ := ii.IndexManifest()
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.Digest != d || desc.Annotations[AnnotationRefName] != "latest" ||
		desc.Annotations[AnnotationContainerdName] != "docker.io/library/app:latest" ||
		desc.Platform == nil || desc.Platform.Architecture != "amd64" {
		t.Errorf("descriptor = %+v", desc)
	}
	limg, err := ii.Image(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(limg); err != nil {
		t.Errorf("validate: %v", err)
	}
}

func TestWriteOCIArchiveCancelled(t *testing.T) {
	s := openStore(t)
	img, _ := loadFixture(t, s, content.Gzip)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WriteOCIArchive(ctx, io.Discard, img, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestRefAnnotations(t *testing.T) {
	tests := []struct {
		ref, refName, containerd string
	}{
		{"", "", ""},
		{"latest", "latest", ""},
		{"v1.0", "v1.0", ""},
		{"app:1", "1", "docker.io/library/app:1"},
		{"ghcr.io/o/app", "latest", "ghcr.io/o/app:latest"},
		{"ghcr.io/o/app@sha256:" + layerDiffID.Hex, "", "ghcr.io/o/app@sha256:" + layerDiffID.Hex},
	}
	for _, tt := range tests {
		ann := refAnnotations(tt.ref)
		if ann[AnnotationRefName] != tt.refName || ann[AnnotationContainerdName] != tt.containerd {
			t.Errorf("refAnnotations(%q) = %v", tt.ref, ann)
		}
	}
}

// writeArchiveFile writes an OCI archive of img to a file and returns it.
func writeArchiveFile(t *testing.T, img v1.Image, refName string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteOCIArchive(context.Background(), f, img, refName); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOCIArchiveSkopeo(t *testing.T) {
	testenv.RequireTool(t, "skopeo")
	s := openStore(t)
	img, d := loadFixture(t, s, content.Gzip, content.Zstd)
	m, _ := img.Manifest()
	path := writeArchiveFile(t, img, "docker.io/library/app:latest")
	for _, ref := range []string{"oci-archive:" + path, "oci-archive:" + path + ":latest"} {
		out, err := exec.Command("skopeo", "inspect", "--tmpdir", t.TempDir(), ref).CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo inspect %s: %v\n%s", ref, err, out)
		}
		var got struct {
			Digest       string
			Architecture string
			Os           string
			Layers       []string
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if got.Digest != d.String() || got.Os != "linux" || got.Architecture != "amd64" ||
			len(got.Layers) != 2 || got.Layers[1] != m.Layers[1].Digest.String() {
			t.Errorf("skopeo inspect %s = %+v", ref, got)
		}
	}
}

func TestOCIArchiveUmoci(t *testing.T) {
	testenv.RequireTool(t, "umoci")
	testenv.RequireRoot(t) // umoci unpack
	s := openStore(t)
	img, _ := loadFixture(t, s, content.Gzip)
	path := writeArchiveFile(t, img, "docker.io/library/app:latest")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	layoutDir := filepath.Join(dir, "layout")
	untar(t, f, layoutDir)
	bundle := filepath.Join(dir, "bundle")
	out, err := exec.Command("umoci", "unpack", "--image", layoutDir+":latest", bundle).CombinedOutput()
	if err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(bundle, "rootfs", "etc", "passwd"))
	if err != nil || string(got) != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Errorf("rootfs/etc/passwd = %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(bundle, "rootfs", "usr", "bin", "numbers")); err != nil || fi.Size() != 23893 {
		t.Errorf("rootfs/usr/bin/numbers: %v", err)
	}
	var cfg struct {
		Process struct{ Args []string }
	}
	b, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil || strings.Join(cfg.Process.Args, " ") != "/bin/sh" {
		t.Errorf("config.json args = %v, %v", cfg.Process.Args, err)
	}
}

func TestWriteDockerArchive(t *testing.T) {
	s := openStore(t)
	img, _ := loadFixture(t, s, content.Gzip)
	m, _ := img.Manifest()
	tests := []struct {
		name     string
		tags     []string
		repoTags []string
	}{
		{"tagged", []string{"ghcr.io/o/app:v1", "app"}, []string{"ghcr.io/o/app:v1", "docker.io/library/app:latest"}},
		{"untagged", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteDockerArchive(context.Background(), &buf, img, tt.tags); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			untar(t, bytes.NewReader(buf.Bytes()), dir)
			var manifest []struct {
				Config   string
				RepoTags []string
				Layers   []string
			}
			b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &manifest); err != nil {
				t.Fatal(err)
			}
			// RepoTags come in the order the tags were given.
			if len(manifest) != 1 || strings.Join(manifest[0].RepoTags, " ") != strings.Join(tt.repoTags, " ") {
				t.Errorf("manifest.json = %s", b)
			}
			var tag *name.Tag
			if len(tt.tags) > 0 {
				tg, _ := name.NewTag(tt.repoTags[0])
				tag = &tg
			}
			timg, err := tarball.Image(func() (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
			}, tag)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(timg); err != nil {
				t.Errorf("validate: %v", err)
			}
			layers, _ := timg.Layers()
			if d, _ := layers[0].Digest(); len(layers) != 1 || d != m.Layers[0].Digest {
				t.Errorf("layers = %v", layers)
			}
		})
	}
	if err := WriteDockerArchive(context.Background(), io.Discard, img, []string{"app@" + m.Config.Digest.String()}); err == nil {
		t.Error("a digest reference was accepted as a tag")
	}
}

func TestWriteOCIDir(t *testing.T) {
	s := openStore(t)
	img, d := loadFixture(t, s, content.Gzip)
	dir := filepath.Join(t.TempDir(), "layout")
	for _, ref := range []string{"latest", "latest", "v2", "a:latest", "b:latest", "a:latest"} {
		if err := WriteOCIDir(context.Background(), dir, img, ref, nil); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	ii, _ := p.ImageIndex()
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, m := range im.Manifests {
		if m.Digest != d {
			t.Errorf("descriptor %s", m.Digest)
		}
		refs = append(refs, m.Annotations[AnnotationRefName]+"="+m.Annotations[AnnotationContainerdName])
	}
	want := "latest= v2= latest=docker.io/library/b:latest latest=docker.io/library/a:latest"
	if strings.Join(refs, " ") != want {
		t.Errorf("refs = %v\nwant %s (a repeated name replaces its entry)", refs, want)
	}
	limg, err := p.Image(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(limg); err != nil {
		t.Errorf("validate: %v", err)
	}
}

// TestDockerArchiveDeterministic writes archives with several tags and
// images twice each: the bytes must not depend on map iteration order.
func TestDockerArchiveDeterministic(t *testing.T) {
	s := openStore(t)
	img, _ := loadFixture(t, s, content.Gzip)
	other, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	tags := []string{"app:1", "app:2", "app:3", "ghcr.io/o/app:4", "z:5", "b:6"}
	writers := map[string]func(io.Writer) error{
		"tags": func(w io.Writer) error { return WriteDockerArchive(context.Background(), w, img, tags) },
		"refs": func(w io.Writer) error {
			return WriteDockerArchiveRefs(context.Background(), w, map[string]v1.Image{
				"app:1": img, "app:2": img, "other:1": other, "app:3": img, "other:2": other, "c:1": img})
		},
	}
	for name, write := range writers {
		t.Run(name, func(t *testing.T) {
			var first []byte
			for i := 0; i < 5; i++ {
				var buf bytes.Buffer
				if err := write(&buf); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					first = buf.Bytes()
				} else if !bytes.Equal(first, buf.Bytes()) {
					t.Fatalf("write %d differs from the first", i)
				}
			}
		})
	}
}

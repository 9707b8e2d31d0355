package output

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/export"
	"builder/internal/testenv"
)

// TestOCIMultiname ports BuildKit's testOCILayoutMultiname: an OCI output
// with several names lists the image in index.json once per name, each
// entry with its own io.containerd.image.name and ref.name
// (moby/buildkit#5572), as a tar and as a directory; one name gives one
// entry.
func TestOCIMultiname(t *testing.T) {
	two := []string{"docker.io/org/repo:tag1", "docker.io/org/repo:tag2"}
	for _, tt := range []struct {
		name  string
		tar   bool
		names []string
		want  []string // ref.name of each entry, in order
	}{
		{"tar two names", true, two, []string{"tag1", "tag2"}},
		{"dir two names", false, two, []string{"tag1", "tag2"}},
		{"tar one name", true, two[:1], []string{"tag1"}},
		{"dir one name", false, two[:1], []string{"tag1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			img, err := export.LoadImage(f.store, mustWrite(t, f)) // OCI, as skopeo reads only those by name
			if err != nil {
				t.Fatal(err)
			}
			f.img = img
			dir := t.TempDir()
			dest := filepath.Join(dir, "out")
			if tt.tar {
				dest += ".tar"
			}
			e := f.exporter(Config{Scratch: filepath.Join(dir, "tmp")})
			if _, err := e.Export(context.Background(), []Spec{{Type: "oci", Dest: dest, Tar: tt.tar, Names: tt.names}}, f.img, nil); err != nil {
				t.Fatal(err)
			}
			im := readIndexJSON(t, dest, tt.tar)
			want, _ := f.img.Digest()
			if len(im.Manifests) != len(tt.want) {
				t.Fatalf("index.json has %d entries, want %d: %+v", len(im.Manifests), len(tt.want), im.Manifests)
			}
			for i, d := range im.Manifests {
				if d.Digest != want || d.Annotations[export.AnnotationRefName] != tt.want[i] || d.Annotations[export.AnnotationContainerdName] != tt.names[i] {
					t.Errorf("entry %d = %s %v, want %s ref.name %s name %s", i, d.Digest, d.Annotations, want, tt.want[i], tt.names[i])
				}
			}
			if !tt.tar {
				return
			}
			testenv.RequireTool(t, "skopeo")
			for _, tag := range tt.want {
				out, err := exec.Command("skopeo", "inspect", "--tmpdir", t.TempDir(), "--raw", "oci-archive:"+dest+":"+tag).CombinedOutput()
				if err != nil {
					t.Fatalf("skopeo inspect %s: %v\n%s", tag, err, out)
				}
				if h, _, err := v1.SHA256(strings.NewReader(string(out))); err != nil || h != want {
					t.Errorf("skopeo %s resolves to %s, want %s", tag, h, want)
				}
			}
		})
	}
}

// TestOCIMultinamePlatforms: a multi-platform OCI archive lists its index
// once per name too.
func TestOCIMultinamePlatforms(t *testing.T) {
	f := newFixture(t)
	img2, err := export.LoadImage(f.store, mustWrite(t, f))
	if err != nil {
		t.Fatal(err)
	}
	images := []export.PlatformImage{
		{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Image: f.img},
		{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}, Image: img2},
	}
	dir := t.TempDir()
	dest := filepath.Join(dir, "out.tar")
	e := f.exporter(Config{Scratch: filepath.Join(dir, "tmp")})
	names := []string{"docker.io/org/repo:tag1", "docker.io/org/repo:tag2"}
	res, err := e.ExportPlatforms(context.Background(), []Spec{{Type: "oci", Dest: dest, Tar: true, Names: names}}, images, nil)
	if err != nil {
		t.Fatal(err)
	}
	im := readIndexJSON(t, dest, true)
	if len(im.Manifests) != 2 {
		t.Fatalf("index.json has %d entries, want 2: %+v", len(im.Manifests), im.Manifests)
	}
	for i, d := range im.Manifests {
		if d.Digest != res.Digest || d.Annotations[export.AnnotationContainerdName] != names[i] {
			t.Errorf("entry %d = %s %v, want %s named %s", i, d.Digest, d.Annotations, res.Digest, names[i])
		}
	}
}

func mustWrite(t *testing.T, f *fixture) v1.Hash {
	t.Helper()
	img, err := randomImage()
	if err != nil {
		t.Fatal(err)
	}
	d, err := export.WriteImage(context.Background(), f.store, img)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// readIndexJSON reads index.json of the OCI layout at p, a tar or a
// directory.
func readIndexJSON(t *testing.T, p string, isTar bool) v1.IndexManifest {
	t.Helper()
	var raw []byte
	if isTar {
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		tr := tar.NewReader(fh)
		for {
			h, err := tr.Next()
			if err != nil {
				t.Fatalf("index.json not in %s: %v", p, err)
			}
			if h.Name == "index.json" {
				if raw, err = io.ReadAll(tr); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
	} else {
		var err error
		if raw, err = os.ReadFile(filepath.Join(p, "index.json")); err != nil {
			t.Fatal(err)
		}
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(raw, &im); err != nil {
		t.Fatal(err)
	}
	return im
}

// randomImage is a random OCI image.
func randomImage() (v1.Image, error) {
	img, err := random.Image(512, 1)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON), nil
}

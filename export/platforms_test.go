package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"builder/internal/testenv"
	"builder/snapshot/content"
)

// platformImages stores the fixture image for linux/amd64 and a copy of
// it whose config says linux/arm64.
func platformImages(t *testing.T, s *content.Store) []PlatformImage {
	t.Helper()
	amd, _ := loadFixture(t, s, content.Gzip)
	cfg, err := amd.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = "arm64"
	arm, err := mutate.ConfigFile(amd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteImage(context.Background(), s, arm); err != nil {
		t.Fatal(err)
	}
	return []PlatformImage{
		{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Image: amd},
		{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}, Image: arm},
	}
}

func TestAssembleIndex(t *testing.T) {
	s := openStore(t)
	images := platformImages(t, s)
	idx, err := AssembleIndex(images, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("index %+v", im)
	}
	for i, d := range im.Manifests {
		want, _ := images[i].Image.Digest()
		if d.Digest != want || d.MediaType != types.OCIManifestSchema1 || PlatformString(*d.Platform) != PlatformString(images[i].Platform) {
			t.Errorf("manifest %d: %+v", i, d)
		}
	}
	// Docker schema 2 images make a Docker manifest list.
	var docker []PlatformImage
	for _, pi := range images {
		docker = append(docker, PlatformImage{Platform: pi.Platform, Image: mutate.MediaType(pi.Image, types.DockerManifestSchema2)})
	}
	if idx, err := AssembleIndex(docker, nil); err != nil {
		t.Fatal(err)
	} else if mt, _ := idx.MediaType(); mt != types.DockerManifestList {
		t.Errorf("docker images: %s", mt)
	}
	if _, err := AssembleIndex(nil, nil); err == nil {
		t.Error("empty index assembled")
	}
	if _, err := AssembleIndex([]PlatformImage{images[0], images[0]}, nil); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("twice: %v", err)
	}
}

// TestAssembleIndexAnnotations: the index and each manifest's descriptor
// carry the annotations given, the OCI layout's index.json entry its own
// (with the name's winning), in the archive and the directory forms; a
// Docker manifest list, which has no annotations, is refused.
func TestAssembleIndexAnnotations(t *testing.T) {
	s := openStore(t)
	images := platformImages(t, s)
	images[1].Annotations = map[string]string{"org.example.desc": "arm"}
	idx, err := AssembleIndex(images, map[string]string{"org.example.index": "i"})
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	if im.Annotations["org.example.index"] != "i" || len(im.Manifests[0].Annotations) != 0 ||
		im.Manifests[1].Annotations["org.example.desc"] != "arm" {
		t.Fatalf("index %+v", im)
	}
	top := map[string]string{"org.example.top": "t", AnnotationRefName: "hostile"}
	var buf bytes.Buffer
	if err := WriteOCIIndexArchive(context.Background(), &buf, idx, []string{"app:1"}, false, top); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	untar(t, bytes.NewReader(buf.Bytes()), dir)
	ociDir := t.TempDir()
	if err := WriteOCIIndexDir(context.Background(), ociDir, idx, "app:1", top); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, ociDir} {
		lp, err := layout.ImageIndexFromPath(d)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := lp.IndexManifest()
		if len(m.Manifests) != 1 || m.Manifests[0].Annotations["org.example.top"] != "t" || m.Manifests[0].Annotations[AnnotationRefName] != "1" {
			t.Errorf("%s: index.json %+v", d, m.Manifests)
		}
	}
	// One image: its index.json entry gets them, in both forms.
	buf.Reset()
	if err := WriteOCIArchiveImages(context.Background(), &buf, []NamedImage{{Image: images[0].Image, RefName: "app:1", Annotations: top}}); err != nil {
		t.Fatal(err)
	}
	dir, ociDir = t.TempDir(), t.TempDir()
	untar(t, bytes.NewReader(buf.Bytes()), dir)
	if err := WriteOCIDir(context.Background(), ociDir, images[0].Image, "", top); err != nil {
		t.Fatal(err)
	}
	for d, name := range map[string]string{dir: "1", ociDir: "hostile"} {
		lp, err := layout.ImageIndexFromPath(d)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := lp.IndexManifest()
		if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsImage() || m.Manifests[0].Annotations["org.example.top"] != "t" || m.Manifests[0].Annotations[AnnotationRefName] != name {
			t.Errorf("%s: index.json %+v", d, m.Manifests)
		}
	}
	var docker []PlatformImage
	for _, pi := range images {
		docker = append(docker, PlatformImage{Platform: pi.Platform, Image: mutate.MediaType(pi.Image, types.DockerManifestSchema2), Annotations: pi.Annotations})
	}
	if _, err := AssembleIndex(docker, nil); err == nil || !strings.Contains(err.Error(), "cannot carry annotations") {
		t.Errorf("docker manifest list with annotations: %v", err)
	}
}

// TestIndexInStore: WriteIndex and LoadIndex round-trip, the tag index
// lists an index's platforms, and the index's images load.
func TestIndexInStore(t *testing.T) {
	s := openStore(t)
	idx, err := AssembleIndex(platformImages(t, s), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := WriteIndex(context.Background(), s, idx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadIndex(s, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(got); err != nil {
		t.Fatal(err)
	}
	images, err := IndexImages(got)
	if err != nil || len(images) != 2 || HostImage(images) != 0 {
		t.Fatalf("IndexImages = %v, %v", images, err)
	}
	x, err := OpenIndex(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Tag("multi:1", v1.Descriptor{Digest: d}); err != nil {
		t.Fatal(err)
	}
	entries, err := x.List()
	if err != nil || len(entries) != 1 {
		t.Fatal(entries, err)
	}
	e := entries[0]
	if e.MediaType != types.OCIImageIndex || strings.Join(e.Platforms, ",") != "linux/amd64,linux/arm64" || e.Created.IsZero() {
		t.Errorf("entry %+v", e)
	}
	// Both images share their layer, counted once; each has its own config
	// and manifest, and the index counts itself.
	raw, _ := got.RawManifest()
	amd, _ := images[0].Image.Manifest()
	arm, _ := images[1].Image.Manifest()
	amdSize, _ := images[0].Image.Size()
	armSize, _ := images[1].Image.Size()
	want := int64(len(raw)) + amdSize + armSize + amd.Config.Size + arm.Config.Size + amd.Layers[0].Size
	if e.Size != want {
		t.Errorf("size %d, want %d", e.Size, want)
	}
	// An image manifest is no index, and an index is no image.
	amdDigest, _ := images[0].Image.Digest()
	if _, err := LoadIndex(s, amdDigest); !errors.Is(err, ErrNotIndex) {
		t.Errorf("LoadIndex(image) = %v", err)
	}
	if _, err := LoadImage(s, d); !errors.Is(err, ErrNotImage) {
		t.Errorf("LoadImage(index) = %v", err)
	}
}

// TestIndexImagesSkipsAttestations: manifests without a platform, or
// with unknown/unknown (BuildKit's attestation manifests), are no
// platform's image.
func TestIndexImagesSkipsAttestations(t *testing.T) {
	s := openStore(t)
	images := platformImages(t, s)
	idx, err := AssembleIndex(images[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: images[1].Image,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}})
	got, err := IndexImages(idx)
	if err != nil || len(got) != 1 || got[0].Platform.Architecture != "amd64" {
		t.Errorf("IndexImages = %+v, %v", got, err)
	}
}

// TestWriteOCIIndexArchive: the archive is an OCI layout whose index.json
// names the index, which skopeo reads back byte for byte; ggcr validates
// it, and every platform's image is complete.
func TestWriteOCIIndexArchive(t *testing.T) {
	s := openStore(t)
	idx, err := AssembleIndex(platformImages(t, s), nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteOCIIndexArchive(context.Background(), &buf, idx, []string{"app:1"}, false, nil); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := WriteOCIIndexArchive(context.Background(), &again, idx, []string{"app:1"}, false, nil); err != nil || !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Errorf("not deterministic: %v", err)
	}
	dir := t.TempDir()
	untar(t, bytes.NewReader(buf.Bytes()), dir)
	lp, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, _ := lp.IndexManifest()
	d, _ := idx.Digest()
	if len(top.Manifests) != 1 || top.Manifests[0].Digest != d || top.Manifests[0].Annotations[AnnotationRefName] != "1" {
		t.Fatalf("index.json %+v", top.Manifests)
	}
	inner, err := lp.ImageIndex(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(inner); err != nil {
		t.Fatal(err)
	}
	skopeo := testenv.RequireTool(t, "skopeo")
	p := filepath.Join(t.TempDir(), "oci.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	raw, err := exec.Command(skopeo, "inspect", "--raw", "oci-archive:"+p).Output()
	want, _ := idx.RawManifest()
	if err != nil || !bytes.Equal(bytes.TrimSpace(raw), want) {
		t.Errorf("skopeo inspect --raw: %v\n%s\nwant %s", err, raw, want)
	}
	// The layout directory form holds the same index.
	ociDir := t.TempDir()
	if err := WriteOCIIndexDir(context.Background(), ociDir, idx, "app:1", nil); err != nil {
		t.Fatal(err)
	}
	ld, err := layout.ImageIndexFromPath(ociDir)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := ld.IndexManifest(); len(m.Manifests) != 1 || m.Manifests[0].Digest != d {
		t.Errorf("oci dir index.json %+v", m)
	}
}

// TestDockerIndexArchivePodman: podman loads every platform's image of a
// multi-platform docker archive, the tag on the host's.
func TestDockerIndexArchivePodman(t *testing.T) {
	requireRoot(t)
	podman := testenv.RequireTool(t, "podman")
	s := openStore(t)
	images := platformImages(t, s)
	var buf bytes.Buffer
	if err := WriteDockerIndexArchive(context.Background(), &buf, images, []string{"builder-test/multi:1"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	untar(t, bytes.NewReader(buf.Bytes()), dir)
	var entries []struct {
		Config   string
		RepoTags []string
	}
	b, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(b, &entries); err != nil || len(entries) != 2 || len(entries[0].RepoTags) != 1 || len(entries[1].RepoTags) != 0 {
		t.Fatalf("manifest.json %s (%v)", b, err)
	}
	p := filepath.Join(t.TempDir(), "d.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "pm") // podman wants a short runroot
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	args := []string{"--root", filepath.Join(root, "root"), "--runroot", filepath.Join(root, "run"), "--storage-driver", "vfs"}
	defer exec.Command(podman, append(args, "rmi", "--all", "--force")...).Run()
	if out, err := exec.Command(podman, append(args, "load", "-i", p)...).CombinedOutput(); err != nil {
		t.Fatalf("podman load: %v\n%s", err, out)
	}
	out, err := exec.Command(podman, append(args, "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}")...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman images: %v\n%s", err, out)
	}
	for i, pi := range images {
		cfg, _ := pi.Image.ConfigName()
		if !strings.Contains(string(out), cfg.Hex) {
			t.Errorf("podman lacks the %s image %s:\n%s", PlatformString(pi.Platform), cfg.Hex, out)
		}
		if i == 0 && !strings.Contains(string(out), cfg.Hex+" docker.io/builder-test/multi:1") {
			t.Errorf("the tag is not on the amd64 image:\n%s", out)
		}
	}
}

// TestWriteOCIIndexArchiveNames: index.json lists the index (or, flattened,
// its first manifest) once per name, the rest once, and each name
// resolves in skopeo.
func TestWriteOCIIndexArchiveNames(t *testing.T) {
	s := openStore(t)
	idx, err := AssembleIndex(platformImages(t, s), nil)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	d, _ := idx.Digest()
	names := []string{"docker.io/org/repo:tag1", "docker.io/org/repo:tag2"}
	for _, tt := range []struct {
		name    string
		flatten bool
		want    []v1.Hash // digests of index.json's entries
		named   int       // how many of them carry a name
	}{
		{"index", false, []v1.Hash{d, d}, 2},
		{"flatten", true, append([]v1.Hash{im.Manifests[0].Digest, im.Manifests[0].Digest}, digests(im.Manifests[1:])...), 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteOCIIndexArchive(context.Background(), &buf, idx, names, tt.flatten, nil); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			untar(t, bytes.NewReader(buf.Bytes()), dir)
			lp, err := layout.ImageIndexFromPath(dir)
			if err != nil {
				t.Fatal(err)
			}
			top, _ := lp.IndexManifest()
			if len(top.Manifests) != len(tt.want) {
				t.Fatalf("index.json has %d entries, want %d: %+v", len(top.Manifests), len(tt.want), top.Manifests)
			}
			for i, m := range top.Manifests {
				wantName := ""
				if i < tt.named {
					wantName = names[i]
				}
				if m.Digest != tt.want[i] || m.Annotations[AnnotationContainerdName] != wantName {
					t.Errorf("entry %d = %s %v, want %s named %q", i, m.Digest, m.Annotations, tt.want[i], wantName)
				}
			}
			if tt.flatten {
				return
			}
			skopeo := testenv.RequireTool(t, "skopeo")
			p := filepath.Join(t.TempDir(), "oci.tar")
			if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			want, _ := idx.RawManifest()
			for _, tag := range []string{"tag1", "tag2"} {
				raw, err := exec.Command(skopeo, "inspect", "--tmpdir", t.TempDir(), "--raw", "oci-archive:"+p+":"+tag).Output()
				if err != nil || !bytes.Equal(bytes.TrimSpace(raw), want) {
					t.Errorf("skopeo %s: %v\n%s", tag, err, raw)
				}
			}
		})
	}
}

func digests(ds []v1.Descriptor) []v1.Hash {
	var out []v1.Hash
	for _, d := range ds {
		out = append(out, d.Digest)
	}
	return out
}

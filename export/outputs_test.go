package export

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"builder/internal/testenv"
	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t) // file ownership
}

// storeTarLayer stores the fixture tar file as a layer.
func storeTarLayer(t *testing.T, s *content.Store, file, compression string) v1.Layer {
	t.Helper()
	info, err := s.WriteLayer(context.Background(), func(w io.Writer) error {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	}, content.LayerOptions{Compression: compression})
	if err != nil {
		t.Fatal(err)
	}
	return NewLayer(s, LayerDescFromInfo(info))
}

// whiteoutImage is the fixture layer with testdata/whiteout.tar on top:
// it deletes etc/passwd, empties usr/ (opaque) and adds files.
func whiteoutImage(t *testing.T, s *content.Store) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img,
		storeTarLayer(t, s, "testdata/layer.tar", content.Gzip),
		storeTarLayer(t, s, "testdata/whiteout.tar", content.Zstd))
	if err != nil {
		t.Fatal(err)
	}
	d, err := WriteImage(context.Background(), s, img)
	if err != nil {
		t.Fatal(err)
	}
	out, err := LoadImage(s, d)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// treeOf lists dir as "path mode" lines (content for regular files).
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		line := rel + " " + fi.Mode().String()
		if fi.Mode().IsRegular() && fi.Size() < 100 {
			b, _ := os.ReadFile(p)
			line += " " + strings.TrimSpace(string(b))
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var wantTree = []string{
	"etc drwxr-xr-x",
	"hello -rwxr-xr-x hello",
	"hello-link -rwxr-xr-x hello",
	"usr drwxr-xr-x",
	"usr/new -rw-r--r-- new",
}

func TestUnpackRootfs(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	img := whiteoutImage(t, s)
	dir := filepath.Join(t.TempDir(), "rootfs")
	for i := 0; i < 2; i++ { // idempotent
		if err := UnpackRootfs(context.Background(), dir, img); err != nil {
			t.Fatal(err)
		}
	}
	if got := treeOf(t, dir); strings.Join(got, "\n") != strings.Join(wantTree, "\n") {
		t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantTree, "\n"))
	}
	a, _ := os.Stat(filepath.Join(dir, "hello"))
	b, _ := os.Stat(filepath.Join(dir, "hello-link"))
	if !os.SameFile(a, b) {
		t.Error("hello-link is not a hard link of hello")
	}
}

func TestWriteRootfsTar(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	img := whiteoutImage(t, s)
	scratch := t.TempDir()
	var buf bytes.Buffer
	if err := WriteRootfsTar(context.Background(), &buf, img, scratch); err != nil {
		t.Fatal(err)
	}
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
		e := h.Name + " " + string(h.Typeflag)
		if h.Typeflag == tar.TypeLink {
			e += " " + h.Linkname
		}
		names = append(names, e)
	}
	want := []string{"etc/ 5", "hello 0", "hello-link 1 hello", "usr/ 5", "usr/new 0"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("tar entries %q, want %q", names, want)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch not cleaned: %v", left)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WriteRootfsTar(ctx, io.Discard, img, scratch); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch not cleaned after cancel: %v", left)
	}
}

func TestConvert(t *testing.T) {
	s := openStore(t)
	img := whiteoutImage(t, s) // layers: gzip, zstd
	cfgName, _ := img.ConfigName()
	orig, _ := img.Digest()
	tests := []struct {
		name  string
		o     ConvertOptions
		types []types.MediaType
		same  bool // digest unchanged
	}{
		{"nothing", ConvertOptions{}, []types.MediaType{types.OCILayer, types.OCILayerZStd}, true},
		{"gzip", ConvertOptions{Compression: content.Gzip}, []types.MediaType{types.OCILayer, types.OCILayer}, false},
		{"uncompressed", ConvertOptions{Compression: content.Uncompressed}, []types.MediaType{types.OCIUncompressedLayer, types.OCIUncompressedLayer}, false},
		{"zstd docker forces oci", ConvertOptions{Compression: content.Zstd, MediaTypes: MediaTypesDocker}, []types.MediaType{types.OCILayerZStd, types.OCILayerZStd}, false},
		{"docker gzip", ConvertOptions{Compression: content.Gzip, MediaTypes: MediaTypesDocker}, []types.MediaType{types.DockerLayer, types.DockerLayer}, false},
		{"force level", ConvertOptions{Compression: content.Gzip, Level: 1, Force: true}, []types.MediaType{types.OCILayer, types.OCILayer}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, out, err := Convert(context.Background(), s, img, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if (d == orig) != tt.same {
				t.Errorf("digest %s, original %s", d, orig)
			}
			m, _ := out.Manifest()
			for i, l := range m.Layers {
				if l.MediaType != tt.types[i] {
					t.Errorf("layer %d: %s, want %s", i, l.MediaType, tt.types[i])
				}
			}
			if c, _ := out.ConfigName(); c != cfgName {
				t.Errorf("config %s changed (was %s)", c, cfgName)
			}
			wantMT := types.OCIManifestSchema1
			if tt.types[0] == types.DockerLayer {
				wantMT = types.DockerManifestSchema2
			}
			if m.MediaType != wantMT {
				t.Errorf("manifest media type %s", m.MediaType)
			}
			if tt.o.Compression == content.Gzip { // validate reads gzip layers only
				if err := validate.Image(out); err != nil {
					t.Errorf("validate: %v", err)
				}
			}
			if d2, _, err := Convert(context.Background(), s, img, tt.o); err != nil || d2 != d {
				t.Errorf("second Convert = %s, %v", d2, err)
			}
		})
	}
	// force-compression recompresses what already is gzip: a different
	// level gives different bytes for the gzip layer (9: layers are
	// written at level 1 since issue 19).
	_, a, _ := Convert(context.Background(), s, img, ConvertOptions{Compression: content.Gzip})
	_, b, _ := Convert(context.Background(), s, img, ConvertOptions{Compression: content.Gzip, Level: 9, Force: true})
	ma, _ := a.Manifest()
	mb, _ := b.Manifest()
	m0, _ := img.Manifest()
	if ma.Layers[0].Digest != m0.Layers[0].Digest || mb.Layers[0].Digest == m0.Layers[0].Digest {
		t.Errorf("gzip layer: kept %v, forced %v (original %s)", ma.Layers[0].Digest, mb.Layers[0].Digest, m0.Layers[0].Digest)
	}
	if _, _, err := Convert(context.Background(), s, img, ConvertOptions{Compression: "lz4"}); err == nil {
		t.Error("lz4 accepted")
	}
}

func TestLoadArchive(t *testing.T) {
	src := openStore(t)
	img := whiteoutImage(t, src)
	d, _ := img.Digest()
	cfgName, _ := img.ConfigName()
	dir := t.TempDir()
	write := func(name string, fn func(io.Writer) error) string {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := fn(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	ociPath := write("oci.tar", func(w io.Writer) error {
		return WriteOCIArchive(context.Background(), w, img, "example.com/a/app:v1")
	})
	dockerPath := write("docker.tar", func(w io.Writer) error {
		return WriteDockerArchive(context.Background(), w, img, []string{"app:1", "app:2"})
	})
	t.Run("oci", func(t *testing.T) {
		s := openStore(t)
		for i := 0; i < 2; i++ {
			got, err := LoadArchive(context.Background(), s, ociPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Digest != d || strings.Join(got[0].Names, " ") != "example.com/a/app:v1" {
				t.Errorf("loaded %+v", got)
			}
		}
	})
	t.Run("docker", func(t *testing.T) {
		s := openStore(t)
		got, err := LoadArchive(context.Background(), s, dockerPath)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || strings.Join(got[0].Names, " ") != "docker.io/library/app:1 docker.io/library/app:2" {
			t.Fatalf("loaded %+v", got)
		}
		limg, err := LoadImage(s, got[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := limg.ConfigName(); c != cfgName {
			t.Errorf("config %s, want %s", c, cfgName)
		}
		m, _ := limg.Manifest()
		m0, _ := img.Manifest()
		// The zstd layer forces OCI types; compressed layers keep their bytes.
		if m.MediaType != types.OCIManifestSchema1 || m.Layers[0].Digest != m0.Layers[0].Digest || m.Layers[1].Digest != m0.Layers[1].Digest {
			t.Errorf("manifest %+v", m)
		}
	})
	t.Run("docker save layout", func(t *testing.T) {
		// Old docker save: uncompressed layer.tar files, <hex>.json config.
		rawCfg, _ := img.RawConfigFile()
		p := write("old.tar", func(w io.Writer) error {
			tw := tar.NewWriter(w)
			add := func(n string, b []byte) {
				tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
				tw.Write(b)
			}
			l1, _ := os.ReadFile("testdata/layer.tar")
			l2, _ := os.ReadFile("testdata/whiteout.tar")
			add("aaa/layer.tar", l1)
			add("bbb/layer.tar", l2)
			add(cfgName.Hex+".json", rawCfg)
			add("manifest.json", []byte(`[{"Config":"`+cfgName.Hex+`.json","RepoTags":["old:latest"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]`))
			return tw.Close()
		})
		s := openStore(t)
		got, err := LoadArchive(context.Background(), s, p)
		if err != nil {
			t.Fatal(err)
		}
		limg, err := LoadImage(s, got[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(limg); err != nil {
			t.Errorf("validate: %v", err)
		}
		if mt, _ := limg.MediaType(); mt != types.DockerManifestSchema2 || got[0].Names[0] != "docker.io/library/old:latest" {
			t.Errorf("loaded %+v as %s", got, mt)
		}
	})
	t.Run("corrupt layer", func(t *testing.T) {
		// A layer whose content does not match the config's diff ID.
		rawCfg, _ := img.RawConfigFile()
		p := write("bad.tar", func(w io.Writer) error {
			tw := tar.NewWriter(w)
			add := func(n string, b []byte) {
				tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
				tw.Write(b)
			}
			l1, _ := os.ReadFile("testdata/whiteout.tar") // swapped
			l2, _ := os.ReadFile("testdata/layer.tar")
			add("a.tar", l1)
			add("b.tar", l2)
			add("config.json", rawCfg)
			add("manifest.json", []byte(`[{"Config":"config.json","RepoTags":["bad:1"],"Layers":["a.tar","b.tar"]}]`))
			return tw.Close()
		})
		s := openStore(t)
		if _, err := LoadArchive(context.Background(), s, p); !errors.Is(err, content.ErrDigestMismatch) {
			t.Errorf("err = %v, want ErrDigestMismatch", err)
		}
		var blobs []string
		s.Walk(context.Background(), func(h v1.Hash, _ int64) error { blobs = append(blobs, h.String()); return nil })
		sort.Strings(blobs)
		// No manifest may be stored: nothing names the lying layer.
		for _, b := range blobs {
			raw, _ := s.ReadBlob(mustHash(b), 1<<20)
			if bytes.Contains(raw, []byte(`"layers"`)) {
				t.Errorf("a manifest was stored: %s", raw)
			}
		}
	})
	t.Run("not an archive", func(t *testing.T) {
		if _, err := LoadArchive(context.Background(), openStore(t), "testdata/layer.tar"); !errors.Is(err, ErrUnknownArchive) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestDockerArchivePodman(t *testing.T) {
	requireRoot(t)
	podman := testenv.RequireTool(t, "podman")
	s := openStore(t)
	img, _ := loadFixture(t, s, content.Gzip)
	p := filepath.Join(t.TempDir(), "d.tar")
	f, _ := os.Create(p)
	if err := WriteDockerArchive(context.Background(), f, img, []string{"builder-test/podman:1"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	root := t.TempDir()
	args := []string{"--root", filepath.Join(root, "root"), "--runroot", filepath.Join(root, "run"), "--storage-driver", "vfs"}
	out, err := exec.Command(podman, append(args, "load", "-i", p)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "docker.io/builder-test/podman:1") {
		t.Fatalf("podman load: %v\n%s", err, out)
	}
	cfg, _ := img.ConfigName()
	out, err = exec.Command(podman, append(args, "images", "--no-trunc", "--format", "{{.ID}}")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), cfg.Hex) {
		t.Errorf("podman images: %v\n%s (want %s)", err, out, cfg.Hex)
	}
	exec.Command(podman, append(args, "rmi", "--all", "--force")...).Run()
}

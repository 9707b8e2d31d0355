package imagediff

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type file struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
	mtime            int64
}

func layerTar(t *testing.T, files []file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: f.name, Typeflag: typ, Mode: f.mode, Uid: f.uid, Linkname: f.link,
			ModTime: time.Unix(f.mtime, 0), Size: int64(len(f.body)), Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, f.body)
	}
	tw.Close()
	return buf.Bytes()
}

func image(t *testing.T, env string, layers ...[]file) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	for _, fs := range layers {
		data := layerTar(t, fs)
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
			tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Env = []string{"PATH=/bin", env}
	cf.Created = v1.Time{Time: time.Unix(1000, 0).UTC()}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

var base = []file{{name: "etc/", typ: tar.TypeDir, mode: 0o755}, {name: "etc/os", body: "x\n", mode: 0o644}}

func TestCompare(t *testing.T) {
	ctx := context.Background()
	a := image(t, "A=1", base, []file{
		{name: "app/", typ: tar.TypeDir, mode: 0o755, mtime: 5},
		{name: "app/bin", body: "one", mode: 0o755, mtime: 5},
		{name: "app/cfg", body: "same", mode: 0o644, mtime: 5},
		{name: "app/gone", body: "g", mode: 0o644},
		{name: "app/ln", typ: tar.TypeSymlink, link: "bin", mode: 0o777},
	})
	b := image(t, "A=2", base, []file{
		{name: "app/", typ: tar.TypeDir, mode: 0o755, mtime: 5},
		{name: "app/bin", body: "two", mode: 0o700, mtime: 6, uid: 7},
		{name: "app/cfg", body: "same", mode: 0o644, mtime: 5},
		{name: "app/ln", typ: tar.TypeSymlink, link: "cfg", mode: 0o777},
		{name: "app/new", body: "n", mode: 0o644},
	}, []file{{name: "extra", body: "e", mode: 0o600}})

	same, err := Compare(ctx, a, a)
	if err != nil || !same.Identical() {
		t.Fatalf("an image against itself: %v %+v", err, same)
	}
	var out bytes.Buffer
	same.Write(&out)
	if !strings.HasPrefix(out.String(), "images are identical") {
		t.Errorf("identical output %q", out.String())
	}

	rep, err := Compare(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Identical() || rep.OnlyTimestamps() {
		t.Fatalf("report %+v", rep)
	}
	// B has one more layer, so one more history entry.
	if len(rep.Config) != 2 || rep.Config[0].Path != "config.Env[1]" || rep.Config[0].Old != `"A=1"` || rep.Config[0].New != `"A=2"` ||
		rep.Config[1].Path != "history[2]" || rep.Config[1].Old != "" {
		t.Errorf("config changes %+v", rep.Config)
	}
	if len(rep.Layers) != 2 || rep.Layers[0].Index != 2 || rep.Layers[1].Index != 3 || rep.Layers[1].A != nil {
		t.Fatalf("layers %+v", rep.Layers)
	}
	var got []string
	for _, f := range rep.Layers[0].Files {
		got = append(got, f.Path+" "+f.Field+" "+f.Old+" "+f.New)
	}
	want := []string{
		"/app/bin mode 0755 0700",
		"/app/bin owner 0:0 7:0",
		"/app/bin mtime 1970-01-01T00:00:05Z 1970-01-01T00:00:06Z",
		"/app/bin content sha256:7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed sha256:3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3",
		"/app/gone removed file 0644 0:0 1 bytes sha256:cd0aa9856147b6c5b4ff2b7dfee5da20" +
			"aa38253099ef1b4a64aced233c9afe29 mtime 1970-01-01T00:00:00Z ",
		"/app/ln link bin cfg",
		"/app/new added  file 0644 0:0 1 bytes sha256:1b16b1df538ba12dc3f97edbb85caa7050d46c148134290feba80f8236c83db9 mtime 1970-01-01T00:00:00Z",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("file changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	out.Reset()
	rep.Write(&out)
	for _, s := range []string{"config.Env[1]: \"A=1\" → \"A=2\"", "layer 3: only in B", "  /extra: added: file 0600", "images differ\n"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
}

func TestCompareOrderAndTimestamps(t *testing.T) {
	ctx := context.Background()
	x := []file{{name: "a", body: "1", mode: 0o644}, {name: "b", body: "2", mode: 0o644}}
	y := []file{x[1], x[0]}
	rep, err := Compare(ctx, image(t, "E=1", x), image(t, "E=1", y))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Layers) != 1 || len(rep.Layers[0].Files) != 0 || len(rep.Layers[0].Notes) != 1 ||
		!strings.Contains(rep.Layers[0].Notes[0], "order") || rep.OnlyTimestamps() {
		t.Errorf("reordered tar: %+v", rep)
	}

	z := []file{{name: "a", body: "1", mode: 0o644, mtime: 99}, x[1]}
	rep, err = Compare(ctx, image(t, "E=1", x), image(t, "E=1", z))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OnlyTimestamps() || len(rep.Layers) != 1 || len(rep.Layers[0].Files) != 1 {
		t.Errorf("mtime only: %+v", rep)
	}
}

// TestOpen reads one image through each source kind and finds it identical
// to itself.
func TestOpen(t *testing.T) {
	ctx := context.Background()
	img := image(t, "A=1", base, []file{{name: "f", body: "data", mode: 0o644}})
	want, _ := img.Digest()
	dir := t.TempDir()

	ociDir := filepath.Join(dir, "layout")
	p, err := layout.Write(ociDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	ociTar := filepath.Join(dir, "oci.tar")
	tarDir(t, ociDir, ociTar)

	dockerTar := filepath.Join(dir, "docker.tar")
	tag, _ := name.NewTag("example.com/x:1")
	if err := tarball.WriteToFile(dockerTar, tag, img); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"oci:" + ociDir, "oci-archive:" + ociTar, ociTar, "docker-archive:" + dockerTar, dockerTar} {
		t.Run(filepath.Base(ref), func(t *testing.T) {
			s, err := Open(ctx, ref, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			rep, err := Compare(ctx, img, s.Image)
			if err != nil {
				t.Fatal(err)
			}
			// docker save stores the config and manifest anew, the layers as they are.
			if strings.Contains(ref, "docker") {
				for _, l := range rep.Layers {
					if len(l.Files) != 0 {
						t.Errorf("files differ through %s: %+v", ref, l)
					}
				}
				return
			}
			if !rep.Identical() || rep.A != want {
				t.Errorf("through %s: %+v", ref, rep)
			}
		})
	}
	if _, err := Open(ctx, "oci-archive:"+filepath.Join(dir, "missing.tar"), OpenOptions{}); err == nil {
		t.Error("a missing archive opened")
	}
}

func tarDir(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			dt, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tw.Write(dt)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

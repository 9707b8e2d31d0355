package output

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"builder/build/registry"
	"builder/export"
	"builder/snapshot/content"
)

// fixture is a store holding one random image, and an Exporter on it whose
// stdout is a buffer.
type fixture struct {
	store  *content.Store
	index  *export.Index
	img    v1.Image
	stdout bytes.Buffer
	lines  []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s, err := content.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	x, err := export.OpenIndex(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	r, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	d, err := export.WriteImage(context.Background(), s, r)
	if err != nil {
		t.Fatal(err)
	}
	img, err := export.LoadImage(s, d)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{store: s, index: x, img: img}
}

func (f *fixture) exporter(c Config) *Exporter {
	c.Store, c.Index = f.store, f.index
	c.Progress = func(l string) { f.lines = append(f.lines, l) }
	if c.Stdout == nil {
		c.Stdout = func() (io.Writer, error) { return &f.stdout, nil }
	}
	return New(c)
}

// TestExport writes one image to a tag, an OCI archive file, a docker
// archive on stdout and a registry, and checks each and the Result.
func TestExport(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(ggcrregistry.New())
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	ref := u.Host + "/app:1"
	dir := t.TempDir()
	e := f.exporter(Config{Registry: registry.New(registry.Options{}), Scratch: filepath.Join(dir, "tmp")})
	specs := []Spec{
		{Type: "oci", Dest: filepath.Join(dir, "oci.tar"), Tar: true},
		{Type: "image"},
		{Type: "docker", Dest: "-"},
		{Type: "registry", Names: []string{ref}, Push: true},
	}
	res, err := e.Export(context.Background(), specs, f.img, []string{"app:1"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := f.img.Digest()
	if res.Digest != want || strings.Join(res.Names, ",") != "app:1" {
		t.Errorf("result %s %v, want %s [app:1] (the first output's)", res.Digest, res.Names, want)
	}
	if d, err := f.index.Lookup("app:1"); err != nil || d.Digest != want {
		t.Errorf("tag app:1 = %v, %v", d.Digest, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "oci.tar")); err != nil || st.Size() == 0 {
		t.Errorf("oci.tar: %v", err)
	}
	if f.stdout.Len() == 0 {
		t.Error("nothing written to stdout for dest=-")
	}
	r, err := registry.New(registry.Options{}).ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := remote.Head(r); err != nil || d.Digest != want {
		t.Errorf("pushed %s: %v, %v", ref, d, err)
	}
	got := strings.Join(f.lines, "\n")
	for _, w := range []string{"exported oci image to " + filepath.Join(dir, "oci.tar"), "exported docker image to stdout"} {
		if !strings.Contains(got, w) {
			t.Errorf("progress lacks %q:\n%s", w, got)
		}
	}
}

// TestExportErrors checks the errors of outputs that cannot be written:
// typed where the command line is at fault, and no file left behind.
func TestExportErrors(t *testing.T) {
	refused := errors.New("refused")
	for _, tc := range []struct {
		name   string
		spec   Spec
		stdout func() (io.Writer, error)
		is     error
		msg    string
	}{
		{"registry without a name", Spec{Type: "registry", Push: true}, nil, ErrNoName, "output type registry needs name= or a -t tag"},
		{"push without a name", Spec{Type: "image", Push: true}, nil, ErrNoName, "push needs name= or a -t tag"},
		{"push without a client", Spec{Type: "registry", Names: []string{"127.0.0.1:1/app"}, Push: true}, nil, nil, "push: no registry client"},
		{"stdout refused", Spec{Type: "tar", Dest: "-"}, func() (io.Writer, error) { return nil, refused }, refused, "export tar to -: refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			dir := t.TempDir()
			e := f.exporter(Config{Scratch: filepath.Join(dir, "tmp"), Stdout: tc.stdout})
			_, err := e.Export(context.Background(), []Spec{tc.spec}, f.img, nil)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || err.Error() != tc.msg {
				t.Errorf("error %v, want %q wrapping %v", err, tc.msg, tc.is)
			}
		})
	}
}

// TestWriteMetadata checks the --metadata-file JSON and the --iidfile.
func TestWriteMetadata(t *testing.T) {
	f := newFixture(t)
	res, err := describe(f.img, []string{"a:1", "b:2"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "meta.json")
	if err := WriteMetadata(p, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Digest     string        `json:"containerimage.digest"`
		Config     string        `json:"containerimage.config.digest"`
		Name       string        `json:"image.name"`
		Descriptor v1.Descriptor `json:"containerimage.descriptor"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	cfg, _ := f.img.ConfigName()
	if m.Digest != res.Digest.String() || m.Config != cfg.String() || m.Name != "a:1,b:2" || m.Descriptor.Digest != res.Digest || m.Descriptor.Size != res.Size {
		t.Errorf("metadata %s", b)
	}
	if err := WriteIDFile(filepath.Join(dir, "iid"), res); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "iid")); string(b) != res.Digest.String() {
		t.Errorf("iidfile %q", b)
	}
	if err := WriteMetadata(filepath.Join(dir, "missing", "meta.json"), res); err == nil || !strings.HasPrefix(err.Error(), "write metadata file: ") {
		t.Errorf("metadata into a missing directory: %v", err)
	}
}

package export

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// layerDiffID is the sha256 of testdata/layer.tar (sha256sum).
var layerDiffID = mustHash("sha256:fd710b43c0dbb11734ea989f69679efb2b4e48beb91bcb2d33bf20ae94184091")

// created is the creation time of the fixture image.
var created = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func mustHash(s string) v1.Hash {
	h, err := v1.NewHash(s)
	if err != nil {
		panic(err)
	}
	return h
}

func openStore(t *testing.T) *content.Store {
	t.Helper()
	s, err := content.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fixture(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/layer.tar")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFixtureLayer(t *testing.T, s *content.Store, compression string) content.LayerInfo {
	t.Helper()
	info, err := s.WriteLayer(context.Background(), func(w io.Writer) error {
		f, err := os.Open("testdata/layer.tar")
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
	return info
}

// fixtureImage stores an OCI image with the fixture layer once per
// compression and returns its manifest digest. (ggcr's validate.Image only
// understands gzip layers.)
func fixtureImage(t *testing.T, s *content.Store, compressions ...string) v1.Hash {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, c := range compressions {
		var err error
		img, err = mutate.AppendLayers(img, NewLayer(s, LayerDescFromInfo(writeFixtureLayer(t, s, c))))
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/bin/sh"}
	cfg.Created = v1.Time{Time: created}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, err := WriteImage(context.Background(), s, img)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readAll(t *testing.T, open func() (io.ReadCloser, error)) []byte {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLayer(t *testing.T) {
	want := fixture(t)
	tests := []struct {
		compression string
		mediaType   types.MediaType
	}{
		{content.Gzip, types.OCILayer},
		{content.Zstd, types.OCILayerZStd},
		{content.Uncompressed, types.OCIUncompressedLayer},
	}
	for _, tt := range tests {
		t.Run(tt.compression, func(t *testing.T) {
			s := openStore(t)
			info := writeFixtureLayer(t, s, tt.compression)
			desc := LayerDescFromInfo(info)
			desc.Size = 0 // must be asked from the store
			l := NewLayer(s, desc)
			if got := readAll(t, l.Uncompressed); !bytes.Equal(got, want) {
				t.Errorf("Uncompressed: %d bytes, want the %d-byte fixture", len(got), len(want))
			}
			blob, err := os.ReadFile(s.Path(info.Digest))
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, l.Compressed); !bytes.Equal(got, blob) {
				t.Error("Compressed differs from the stored blob")
			}
			if d, _ := l.Digest(); d != info.Digest {
				t.Errorf("Digest = %s", d)
			}
			if d, _ := l.DiffID(); d != layerDiffID {
				t.Errorf("DiffID = %s", d)
			}
			if n, err := l.Size(); err != nil || n != int64(len(blob)) {
				t.Errorf("Size = %d, %v", n, err)
			}
			if mt, _ := l.MediaType(); mt != tt.mediaType {
				t.Errorf("MediaType = %s", mt)
			}
		})
	}
	s := openStore(t)
	missing := NewLayer(s, LayerDesc{Digest: layerDiffID, DiffID: layerDiffID, Size: 1, MediaType: types.OCILayer})
	if _, err := missing.Uncompressed(); !errors.Is(err, content.ErrNotFound) {
		t.Errorf("Uncompressed of a missing blob: %v", err)
	}
}

func TestWriteAndLoadImage(t *testing.T) {
	s := openStore(t)
	src, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	d, err := WriteImage(context.Background(), s, src)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := src.Digest(); d != want {
		t.Fatalf("WriteImage = %s, want %s", d, want)
	}
	img, err := LoadImage(s, d)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := img.Digest(); got != d {
		t.Errorf("loaded digest %s, want %s", got, d)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate: %v", err)
	}
	// The loaded image reads its layers from the store, not from src.
	layers, _ := img.Layers()
	ld, _ := layers[1].Digest()
	if err := os.Truncate(s.Path(ld), 3); err != nil {
		t.Fatal(err)
	}
	// It is verified as it is read: the truncated blob is refused and
	// removed.
	rc, err := layers[1].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, content.ErrCorrupt) || s.Has(ld) {
		t.Errorf("reading the truncated store blob: %v (still stored: %v)", err, s.Has(ld))
	}
	// Idempotent, and it stores again what is missing.
	if d2, err := WriteImage(context.Background(), s, src); err != nil || d2 != d {
		t.Errorf("second WriteImage = %s, %v", d2, err)
	}
	if err := s.Verify(ld); err != nil {
		t.Errorf("the layer after the second WriteImage: %v", err)
	}

	fixtureDigest := fixtureImage(t, s, content.Gzip)
	fimg, err := LoadImage(s, fixtureDigest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(fimg); err != nil {
		t.Errorf("validate fixture image: %v", err)
	}
	if mt, _ := fimg.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("media type %s", mt)
	}
}

func TestLoadImageErrors(t *testing.T) {
	s := openStore(t)
	d := fixtureImage(t, s, content.Gzip, content.Zstd)
	m, err := func() (*v1.Manifest, error) {
		img, err := LoadImage(s, d)
		if err != nil {
			return nil, err
		}
		return img.Manifest()
	}()
	if err != nil {
		t.Fatal(err)
	}
	index, _, err := s.WriteBlob(context.Background(), bytes.NewReader([]byte(
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)), v1.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		digest  v1.Hash
		remove  v1.Hash
		wantErr error
	}{
		{"no manifest", mustHash("sha256:" + layerDiffID.Hex[:63] + "0"), v1.Hash{}, content.ErrNotFound},
		{"index", index, v1.Hash{}, ErrNotImage},
		{"no layer", d, m.Layers[1].Digest, content.ErrNotFound},
		{"no config", d, m.Config.Digest, content.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.remove != (v1.Hash{}) {
				if err := s.Delete(tt.remove); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := LoadImage(s, tt.digest); !errors.Is(err, tt.wantErr) {
				t.Errorf("LoadImage = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// lyingLayer claims another layer's digest but serves different bytes.
type lyingLayer struct {
	v1.Layer
	other v1.Layer
}

func (l lyingLayer) Compressed() (io.ReadCloser, error) { return l.other.Compressed() }

func TestWriteImageChecksLayers(t *testing.T) {
	s := openStore(t)
	a, _ := random.Layer(2048, types.DockerLayer)
	b, _ := random.Layer(2048, types.DockerLayer)
	img, err := mutate.AppendLayers(empty.Image, lyingLayer{Layer: a, other: b})
	if err != nil {
		t.Fatal(err)
	}
	_, err = WriteImage(context.Background(), s, img)
	if !errors.Is(err, content.ErrDigestMismatch) {
		t.Fatalf("WriteImage = %v, want ErrDigestMismatch", err)
	}
	var blobs int
	s.Walk(context.Background(), func(v1.Hash, int64) error { blobs++; return nil })
	if blobs != 0 {
		t.Errorf("%d blobs stored by a failed WriteImage", blobs)
	}
}

func TestDecompressSniffs(t *testing.T) {
	// Media types lie sometimes; the magic number decides.
	s := openStore(t)
	for _, c := range []string{content.Gzip, content.Zstd, content.Uncompressed} {
		info := writeFixtureLayer(t, s, c)
		l := NewLayer(s, LayerDesc{Digest: info.Digest, DiffID: info.DiffID, MediaType: types.OCIUncompressedLayer})
		if got := readAll(t, l.Uncompressed); !bytes.Equal(got, fixture(t)) {
			t.Errorf("%s: wrong bytes", c)
		}
	}
	rc, err := Decompress(io.NopCloser(bytes.NewReader(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(rc); len(b) != 0 {
		t.Error("empty input gave bytes")
	}
}

package export

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// unverifiedLayer reads its blob without checking it, as every output did
// before verification: the baseline of BenchmarkExportOCIArchive.
type unverifiedLayer struct{ *storeLayer }

func (l unverifiedLayer) Compressed() (io.ReadCloser, error) { return l.s.Open(l.desc.Digest) }

// BenchmarkExportOCIArchive writes an image of four 64 MiB incompressible
// layers from the store to an OCI archive file, with the digest check of
// every blob (verified) and without it (unverified): the difference is the
// cost of verification, one sha256 pass over the bytes as they stream.
func BenchmarkExportOCIArchive(b *testing.B) {
	const layers, layerSize = 4, 64 << 20
	s, err := content.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, layerSize)
	rand.NewChaCha8([32]byte{7}).Read(chunk)
	var verified, unverified []v1.Layer
	for i := range layers {
		chunk[0] = byte(i)
		info, err := s.WriteLayer(context.Background(), func(w io.Writer) error {
			_, err := w.Write(chunk)
			return err
		}, content.LayerOptions{Compression: content.Uncompressed})
		if err != nil {
			b.Fatal(err)
		}
		l := &storeLayer{s: s, desc: LayerDescFromInfo(info)}
		verified = append(verified, l)
		unverified = append(unverified, unverifiedLayer{l})
	}
	out := filepath.Join(b.TempDir(), "out.tar")
	for _, tc := range []struct {
		name   string
		layers []v1.Layer
	}{{"unverified", unverified}, {"verified", verified}} {
		b.Run(tc.name, func(b *testing.B) {
			img, err := mutate.AppendLayers(empty.Image, tc.layers...)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(layers * layerSize)
			for b.Loop() {
				f, err := os.Create(out)
				if err != nil {
					b.Fatal(err)
				}
				if err := WriteOCIArchive(context.Background(), f, img, "bench"); err != nil {
					b.Fatal(err)
				}
				if err := f.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

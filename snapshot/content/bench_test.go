package content

import (
	"compress/gzip"
	"context"
	"io"
	"math/rand/v2"
	"testing"
)

// benchSize is the amount of tar data each benchmark iteration writes.
const benchSize = 256 << 20

// randomStream writes n incompressible bytes, repeating a 16 MiB random
// chunk (far beyond any codec's window used here).
func randomStream(n int) func(io.Writer) error {
	chunk := make([]byte, 16<<20)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(chunk)
	return func(w io.Writer) error {
		for written := 0; written < n; written += len(chunk) {
			c := chunk
			if n-written < len(c) {
				c = c[:n-written]
			}
			if _, err := w.Write(c); err != nil {
				return err
			}
		}
		return nil
	}
}

func benchmarkWriteLayer(b *testing.B, produce func(io.Writer) error) {
	for _, c := range []string{Gzip, Zstd, Uncompressed} {
		b.Run(c, func(b *testing.B) {
			s, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(benchSize)
			var info LayerInfo
			for b.Loop() {
				info, err = s.WriteLayer(context.Background(), produce, LayerOptions{Compression: c})
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Delete(info.Digest); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(info.Size)/benchSize, "ratio")
		})
	}
	// The single-core standard library, for comparison.
	b.Run("stdlib-gzip", func(b *testing.B) {
		b.SetBytes(benchSize)
		var cw countWriter
		for b.Loop() {
			cw = 0
			zw := gzip.NewWriter(&cw)
			if err := produce(zw); err != nil {
				b.Fatal(err)
			}
			if err := zw.Close(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cw)/benchSize, "ratio")
	})
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

func BenchmarkWriteLayerCompressible(b *testing.B) {
	benchmarkWriteLayer(b, textStream(benchSize, 1))
}

func BenchmarkWriteLayerRandom(b *testing.B) {
	benchmarkWriteLayer(b, randomStream(benchSize))
}

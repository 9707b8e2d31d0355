package content

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/pgzip"
)

// BenchmarkGzipWriters compares the gzip writers a layer could use on real
// layer tars: the tars named by BENCH_LAYER_TARS (colon-separated paths,
// e.g. a debootstrap root filesystem), else a generated 64 MiB tar of
// files like the CLI bench's COPY context (half text, half random, 0-19
// KiB). Each writer compresses the tar held in memory; it reports MB/s of
// input and the output's share of the input ("ratio").
func BenchmarkGzipWriters(b *testing.B) {
	inputs := map[string][]byte{}
	if env := os.Getenv("BENCH_LAYER_TARS"); env != "" {
		for _, p := range strings.Split(env, ":") {
			data, err := os.ReadFile(p)
			if err != nil {
				b.Fatal(err)
			}
			inputs[filepath.Base(p)] = data
		}
	} else {
		inputs["mixed"] = mixedTar(b, 64<<20, nil)
	}
	procs := runtime.GOMAXPROCS(0)
	writers := []struct {
		name string
		new  func(io.Writer) io.WriteCloser
	}{}
	for _, level := range []int{1, 3, 6} {
		writers = append(writers, struct {
			name string
			new  func(io.Writer) io.WriteCloser
		}{fmt.Sprintf("pgzip-%d", level), func(w io.Writer) io.WriteCloser {
			z, _ := pgzip.NewWriterLevel(w, level)
			_ = z.SetConcurrency(1<<20, procs)
			return z
		}}, struct {
			name string
			new  func(io.Writer) io.WriteCloser
		}{fmt.Sprintf("gzip-1stream-%d", level), func(w io.Writer) io.WriteCloser {
			z, _ := gzip.NewWriterLevel(w, level)
			return z
		}}, struct {
			name string
			new  func(io.Writer) io.WriteCloser
		}{fmt.Sprintf("members-%d", level), func(w io.Writer) io.WriteCloser {
			return newMemberWriter(w, level, procs, nil)
		}})
	}
	for name, data := range inputs {
		for _, wr := range writers {
			b.Run(name+"/"+wr.name, func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				var cw countWriter
				cpu0 := cpuTime()
				for b.Loop() {
					cw = 0
					z := wr.new(&cw)
					if _, err := io.Copy(z, bytes.NewReader(data)); err != nil {
						b.Fatal(err)
					}
					if err := z.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(cw)/float64(len(data)), "ratio")
				// CPU time is what a shared machine's load distorts least.
				b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			})
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mixedTar returns a tar of about n bytes of files like the CLI bench's
// COPY context: half text, half random, 0-19 KiB each, and every 500th
// of 3 MiB. change, when set, may replace file i's data.
func mixedTar(tb testing.TB, n int, change func(i int, data []byte) []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rng := rand.New(rand.NewPCG(1, 2))
	text := func(size int, seed uint64) []byte {
		var out bytes.Buffer
		_ = textStream(size, seed)(&out)
		return out.Bytes()
	}
	for i := 0; buf.Len() < n; i++ {
		size := rng.IntN(19 << 10)
		if i%500 == 499 {
			size = 3 << 20
		}
		var data []byte
		name := fmt.Sprintf("app/d%03d/f%05d", i/100, i)
		if i%2 == 0 {
			data = text(size, uint64(i))
		} else {
			data = make([]byte, size)
			_, _ = rand.NewChaCha8([32]byte{byte(i), byte(i >> 8)}).Read(data)
		}
		if change != nil {
			data = change(i, data)
		}
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkGzipReuse writes a 64 MiB COPY-like layer after one file of it
// changed, with and without the previous layer to reuse members from, and
// reports CPU seconds per layer: what checking reused members (decompress
// and compare) costs against compressing them.
func BenchmarkGzipReuse(b *testing.B) {
	oldTar := mixedTar(b, 64<<20, nil)
	newTar := mixedTar(b, 64<<20, func(i int, data []byte) []byte {
		if i == 3000 {
			return append(bytes.Clone(data), "one more line\n"...)
		}
		return data
	})
	for _, level := range []int{1, 6} {
		for _, reuse := range []bool{false, true} {
			b.Run(fmt.Sprintf("level-%d/reuse=%v", level, reuse), func(b *testing.B) {
				s, err := Open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				prev, err := s.WriteLayer(ctx, tarProducer(oldTar), LayerOptions{Level: level})
				if err != nil {
					b.Fatal(err)
				}
				opts := LayerOptions{Level: level}
				if reuse {
					opts.Previous = prev.Digest
				}
				b.SetBytes(int64(len(newTar)))
				cpu0 := cpuTime()
				for b.Loop() {
					info, err := s.WriteLayer(ctx, tarProducer(newTar), opts)
					if err != nil {
						b.Fatal(err)
					}
					if err := s.Delete(info.Digest); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			})
		}
	}
}

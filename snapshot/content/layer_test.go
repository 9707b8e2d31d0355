package content

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// decompress returns the uncompressed bytes of a stored layer blob.
func decompress(t *testing.T, s *Store, info LayerInfo) []byte {
	t.Helper()
	f, err := os.Open(s.Path(info.Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader
	switch info.MediaType {
	case MediaTypeLayerGzip:
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case MediaTypeLayerZstd:
		zr, err := zstd.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		r = f
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFixture(t *testing.T, name string) func(io.Writer) error {
	return func(w io.Writer) error {
		f, err := os.Open("testdata/" + name)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	}
}

func TestWriteLayer(t *testing.T) {
	tar := readFixture(t, "layer.tar")
	tests := []struct {
		opts      LayerOptions
		mediaType string
	}{
		{LayerOptions{}, MediaTypeLayerGzip},
		{LayerOptions{Compression: Gzip, Level: 9}, MediaTypeLayerGzip},
		{LayerOptions{Compression: Gzip, Level: 1}, MediaTypeLayerGzip},
		{LayerOptions{Compression: Zstd}, MediaTypeLayerZstd},
		{LayerOptions{Compression: Zstd, Level: 19}, MediaTypeLayerZstd},
		{LayerOptions{Compression: Uncompressed}, MediaTypeLayerUncompressed},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s-%d", tt.opts.Compression, tt.opts.Level), func(t *testing.T) {
			s := openStore(t)
			info, err := s.WriteLayer(context.Background(), copyFixture(t, "layer.tar"), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if info.DiffID != layerDiffID {
				t.Errorf("DiffID = %s, want %s", info.DiffID, layerDiffID)
			}
			if info.MediaType != tt.mediaType {
				t.Errorf("MediaType = %s, want %s", info.MediaType, tt.mediaType)
			}
			blob, err := os.ReadFile(s.Path(info.Digest))
			if err != nil {
				t.Fatal(err)
			}
			if d, n, _ := v1.SHA256(bytes.NewReader(blob)); d != info.Digest || n != info.Size {
				t.Errorf("blob hashes to %s (%d bytes), info says %s (%d)", d, n, info.Digest, info.Size)
			}
			if got := decompress(t, s, info); !bytes.Equal(got, tar) {
				t.Errorf("layer decompresses to %d bytes, want the %d-byte fixture", len(got), len(tar))
			}
			if tt.mediaType == MediaTypeLayerUncompressed && info.Digest != info.DiffID {
				t.Errorf("uncompressed layer: digest %s != diffID %s", info.Digest, info.DiffID)
			}
			// The same layer again is success and the same blob.
			again, err := s.WriteLayer(context.Background(), copyFixture(t, "layer.tar"), tt.opts)
			if err != nil || again != info {
				t.Errorf("second write = %+v, %v; want %+v", again, err, info)
			}
		})
	}
}

func TestWriteLayerEmpty(t *testing.T) {
	for _, c := range []string{Gzip, Zstd, Uncompressed} {
		s := openStore(t)
		info, err := s.WriteLayer(context.Background(), func(io.Writer) error { return nil }, LayerOptions{Compression: c})
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if want := mustHash("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"); info.DiffID != want {
			t.Errorf("%s: DiffID = %s", c, info.DiffID)
		}
		if got := decompress(t, s, info); len(got) != 0 {
			t.Errorf("%s: decompressed %d bytes", c, len(got))
		}
	}
}

func TestWriteLayerFailures(t *testing.T) {
	boom := errors.New("boom")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		produce func(io.Writer) error
		opts    LayerOptions
		wantErr error
	}{
		{"produce fails", context.Background(), func(w io.Writer) error {
			w.Write(bytes.Repeat([]byte("x"), 3<<20))
			return boom
		}, LayerOptions{}, boom},
		{"cancelled", cancelled, copyFixture(t, "layer.tar"), LayerOptions{Compression: Zstd}, context.Canceled},
		{"bad codec", context.Background(), copyFixture(t, "layer.tar"), LayerOptions{Compression: "lz4"}, nil},
		{"bad gzip level", context.Background(), copyFixture(t, "layer.tar"), LayerOptions{Level: 12}, nil},
		{"bad zstd level", context.Background(), copyFixture(t, "layer.tar"), LayerOptions{Compression: Zstd, Level: -3}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			_, err := s.WriteLayer(tt.ctx, tt.produce, tt.opts)
			if err == nil {
				t.Fatal("WriteLayer succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			var n int
			s.Walk(context.Background(), func(v1.Hash, int64) error { n++; return nil })
			if n != 0 {
				t.Errorf("%d blobs stored", n)
			}
			if left := ingestEntries(t, s); len(left) != 0 {
				t.Errorf("ingest not cleaned: %v", left)
			}
		})
	}
}

// textStream writes n bytes of word soup: compressible like source code,
// but without long-range repeats. Its chunks vary in size so that the
// compressor sees unaligned writes.
func textStream(n int, seed uint64) func(io.Writer) error {
	words := strings.Fields("func return if else for range struct interface error nil " +
		"package import const var type map chan go defer select case switch " +
		"the of and to in is that it was for on are as with his they at be")
	return func(w io.Writer) error {
		rng := rand.New(rand.NewPCG(seed, seed))
		buf := make([]byte, 0, 64<<10)
		for written := 0; written < n; {
			buf = buf[:0]
			limit := 1 + rng.IntN(cap(buf)-16)
			for len(buf) < limit {
				buf = append(buf, words[rng.IntN(len(words))]...)
				buf = append(buf, " \n\t"[rng.IntN(3)])
			}
			if written+len(buf) > n {
				buf = buf[:n-written]
			}
			if _, err := w.Write(buf); err != nil {
				return err
			}
			written += len(buf)
		}
		return nil
	}
}

func TestWriteLayerDeterministic(t *testing.T) {
	const size = 5<<20 + 12345 // several gzip blocks and a partial one
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, c := range []string{Gzip, Zstd} {
		var first LayerInfo
		runs := []struct{ procs, blocks int }{{1, 1}, {2, 2}, {2, 1}, {1, 4}, {2, 8}}
		for i, run := range runs {
			runtime.GOMAXPROCS(run.procs)
			s := openStore(t)
			info, err := s.writeLayer(context.Background(), textStream(size, 7), LayerOptions{Compression: c}, run.blocks)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = info
				if info.Size >= size/2 {
					t.Errorf("%s: text compressed to %d of %d bytes", c, info.Size, size)
				}
				continue
			}
			if info != first {
				t.Errorf("%s with GOMAXPROCS=%d blocks=%d: %s, want %s", c, run.procs, run.blocks, info.Digest, first.Digest)
			}
		}
		// Through the public entry point too, with both CPU counts.
		for _, procs := range []int{1, 2} {
			runtime.GOMAXPROCS(procs)
			s := openStore(t)
			info, err := s.WriteLayer(context.Background(), textStream(size, 7), LayerOptions{Compression: c})
			if err != nil {
				t.Fatal(err)
			}
			if info != first {
				t.Errorf("%s WriteLayer with GOMAXPROCS=%d: %s, want %s", c, procs, info.Digest, first.Digest)
			}
		}
	}
}

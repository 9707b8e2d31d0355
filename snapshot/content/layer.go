package content

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// Compression names accepted in LayerOptions.Compression.
const (
	Gzip         = "gzip"
	Zstd         = "zstd"
	Uncompressed = "uncompressed"
)

// OCI layer media types written by WriteLayer.
const (
	MediaTypeLayerGzip         = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeLayerZstd         = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeLayerUncompressed = "application/vnd.oci.image.layer.v1.tar"
)

// DefaultGzipLevel is the gzip level of layers written without one; see
// docs/performance.md ("Compression") for why.
const DefaultGzipLevel = 1

// LayerOptions selects the compression of a layer blob.
type LayerOptions struct {
	Compression string // "gzip" (default), "zstd" or "uncompressed"
	Level       int    // 0 means the codec's default; gzip 1-9, zstd 1-22

	// Previous is a gzip layer blob written earlier by the same step (a
	// hint; the zero Hash for none). Members whose uncompressed bytes are
	// unchanged are copied from it instead of compressed; the blob is the
	// same bytes either way.
	Previous v1.Hash
	// Stats, when set, receives how a gzip layer was written.
	Stats *LayerStats
}

// WriteLayer compresses the tar that produce writes, hashing the tar
// (DiffID) and the compressed stream (Digest) while writing, and stores the
// compressed blob. Nothing is buffered beyond a few compression members.
// The same tar bytes and options (Previous aside) always give the same
// Digest, whatever the number of CPUs. A gzip layer is a sequence of gzip
// members cut at tar entries (see cutter.go), compressed in parallel, and
// gets a sidecar listing them (sidecar.go). If produce fails or ctx is
// cancelled, nothing is stored. Writing a layer that is already stored is
// success.
func (s *Store) WriteLayer(ctx context.Context, produce func(w io.Writer) error, opts LayerOptions) (LayerInfo, error) {
	return s.writeLayer(ctx, produce, opts, runtime.GOMAXPROCS(0))
}

// writeLayer is WriteLayer with the number of gzip members compressed in
// parallel made explicit, so tests can show it does not change the output.
func (s *Store) writeLayer(ctx context.Context, produce func(w io.Writer) error, opts LayerOptions, blocks int) (LayerInfo, error) {
	mediaType, err := checkLayerOptions(opts)
	if err != nil {
		return LayerInfo{}, err
	}
	w, err := s.NewWriter()
	if err != nil {
		return LayerInfo{}, fmt.Errorf("write layer: %w", err)
	}
	defer w.Close()
	if mediaType == MediaTypeLayerGzip {
		return s.writeGzipLayer(ctx, w, produce, opts, blocks)
	}

	comp, err := newCompressor(w, opts, blocks)
	if err != nil {
		return LayerInfo{}, fmt.Errorf("write layer: %w", err)
	}
	diffID := sha256.New()
	perr := produce(&ctxWriter{ctx: ctx, w: io.MultiWriter(diffID, comp)})
	// Close even after a failure: it stops the compressor's goroutines.
	cerr := comp.Close()
	if perr != nil {
		return LayerInfo{}, fmt.Errorf("produce layer: %w", perr)
	}
	if err := ctx.Err(); err != nil {
		return LayerInfo{}, fmt.Errorf("write layer: %w", err)
	}
	if cerr != nil {
		return LayerInfo{}, fmt.Errorf("compress layer: %w", cerr)
	}
	if err := w.Commit(v1.Hash{}); err != nil {
		return LayerInfo{}, fmt.Errorf("write layer: %w", err)
	}
	return LayerInfo{
		DiffID:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diffID.Sum(nil))},
		Digest:    w.Digest(),
		Size:      w.Size(),
		MediaType: mediaType,
	}, nil
}

func checkLayerOptions(opts LayerOptions) (mediaType string, err error) {
	switch opts.Compression {
	case "", Gzip:
		if opts.Level != 0 && (opts.Level < 1 || opts.Level > 9) {
			return "", fmt.Errorf("write layer: gzip level %d out of range 1-9", opts.Level)
		}
		return MediaTypeLayerGzip, nil
	case Zstd:
		if opts.Level != 0 && (opts.Level < 1 || opts.Level > 22) {
			return "", fmt.Errorf("write layer: zstd level %d out of range 1-22", opts.Level)
		}
		return MediaTypeLayerZstd, nil
	case Uncompressed:
		return MediaTypeLayerUncompressed, nil
	default:
		return "", fmt.Errorf("write layer: unknown compression %q", opts.Compression)
	}
}

// writeGzipLayer is writeLayer for gzip: members, reuse and a sidecar.
func (s *Store) writeGzipLayer(ctx context.Context, w *Writer, produce func(w io.Writer) error, opts LayerOptions, workers int) (LayerInfo, error) {
	level := DefaultGzipLevel
	if opts.Level != 0 {
		level = opts.Level
	}
	compressor := gzipCompressorID(level)
	var prev *prevLayer
	if opts.Previous != (v1.Hash{}) {
		var f *os.File
		if prev, f = s.openPrevious(opts.Previous, compressor); f != nil {
			defer f.Close()
		}
	}
	mw := newMemberWriter(w, level, workers, prev)
	perr := produce(&ctxWriter{ctx: ctx, w: mw})
	// Close even after a failure: it stops the pipeline's goroutines.
	cerr := mw.Close()
	if perr != nil {
		return LayerInfo{}, fmt.Errorf("produce layer: %w", perr)
	}
	if err := ctx.Err(); err != nil {
		return LayerInfo{}, fmt.Errorf("write layer: %w", err)
	}
	if cerr != nil {
		return LayerInfo{}, fmt.Errorf("compress layer: %w", cerr)
	}
	if err := w.Commit(v1.Hash{}); err != nil {
		return LayerInfo{}, fmt.Errorf("write layer: %w", err)
	}
	info := LayerInfo{
		DiffID:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(mw.Sum())},
		Digest:    w.Digest(),
		Size:      w.Size(),
		MediaType: MediaTypeLayerGzip,
	}
	_ = s.writeSidecar(info.Digest, compressor, info.Size, mw.members)
	if opts.Stats != nil {
		*opts.Stats = mw.stats
	}
	return info, nil
}

// newCompressor returns the compressing writer for opts (zstd or none),
// writing into dst. Closing it flushes the codec but does not close dst.
func newCompressor(dst io.Writer, opts LayerOptions, _ int) (io.WriteCloser, error) {
	switch opts.Compression {
	case Zstd:
		level := zstd.SpeedDefault
		if opts.Level != 0 {
			level = zstd.EncoderLevelFromZstd(opts.Level)
		}
		// One encoder: the stream is then a function of the bytes and the
		// level only.
		return zstd.NewWriter(dst, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1))
	default:
		return nopWriteCloser{dst}, nil
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// Package content is the content-addressed blob store: every blob (layer,
// config, manifest) lives once at blobs/sha256/<hex> below the store root,
// the layout of an OCI image layout, so the store root is also readable as
// one. Blobs are written to a temporary file under ingest/, hashed while they
// are written, fsynced and renamed into place: a blob path either does not
// exist or holds exactly the bytes its name promises.
package content

import (
	"context"
	"errors"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrNotFound is returned when a blob is not in the store.
var ErrNotFound = errors.New("blob not found")

// ErrDigestMismatch is returned when written bytes do not hash to the
// expected digest; nothing is stored.
var ErrDigestMismatch = errors.New("digest mismatch")

// Store is a blob store rooted at a directory. See package doc for its format.
type Store struct {
	root string
}

// LayerInfo describes a layer blob written by WriteLayer.
type LayerInfo struct {
	DiffID    v1.Hash // sha256 of the uncompressed tar
	Digest    v1.Hash // sha256 of the compressed blob
	Size      int64   // size of the compressed blob
	MediaType string  // OCI layer media type of the compression used
}

// Compile-time documentation of the API the rest of builder uses; the
// implementation lives in this package's other files.
var _ interface {
	Path(d v1.Hash) string
	Has(d v1.Hash) bool
	Size(d v1.Hash) (int64, error)
	Open(d v1.Hash) (io.ReadCloser, error)
	// WriteBlob streams r into the store and checks it against expected
	// (a zero Hash skips the check). Idempotent.
	WriteBlob(ctx context.Context, r io.Reader, expected v1.Hash) (v1.Hash, int64, error)
	// WriteLayer compresses the tar that produce writes, hashing the tar
	// (DiffID) and the compressed stream (Digest) while writing.
	WriteLayer(ctx context.Context, produce func(w io.Writer) error, opts LayerOptions) (LayerInfo, error)
} = (*Store)(nil)

// LayerOptions selects the compression of a layer blob.
type LayerOptions struct {
	Compression string // "gzip" (default), "zstd" or "uncompressed"
	Level       int    // 0 means the codec's default
}

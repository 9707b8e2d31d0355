package export

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// LayerDesc describes a layer blob in the store.
type LayerDesc struct {
	Digest    v1.Hash         // sha256 of the blob as stored
	DiffID    v1.Hash         // sha256 of the uncompressed tar
	Size      int64           // size of the blob; 0 means ask the store
	MediaType types.MediaType // e.g. types.OCILayer
}

// LayerDescFromInfo converts what content.Store.WriteLayer returns.
func LayerDescFromInfo(info content.LayerInfo) LayerDesc {
	return LayerDesc{Digest: info.Digest, DiffID: info.DiffID, Size: info.Size, MediaType: types.MediaType(info.MediaType)}
}

// storeLayer is a v1.Layer whose bytes are a blob in the store.
type storeLayer struct {
	s    *content.Store
	desc LayerDesc
}

// NewLayer returns a v1.Layer backed by the store blob desc.Digest. It does
// not check that the blob exists; Compressed and Uncompressed fail with an
// error wrapping content.ErrNotFound if it does not. The layer holds no
// resources; every Compressed or Uncompressed call opens the blob anew.
func NewLayer(s *content.Store, desc LayerDesc) v1.Layer {
	return &storeLayer{s: s, desc: desc}
}

// Digest returns the sha256 of the stored blob.
func (l *storeLayer) Digest() (v1.Hash, error) { return l.desc.Digest, nil }

// DiffID returns the sha256 of the uncompressed tar.
func (l *storeLayer) DiffID() (v1.Hash, error) { return l.desc.DiffID, nil }

// Size returns the size of the stored blob.
func (l *storeLayer) Size() (int64, error) {
	if l.desc.Size > 0 {
		return l.desc.Size, nil
	}
	return l.s.Size(l.desc.Digest)
}

// MediaType returns the layer's media type.
func (l *storeLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

// Compressed opens the stored blob, verified against its digest while it
// is read (content.Store.OpenVerified): whatever writes it out fails with
// a *content.CorruptError rather than ship bytes that miss their name.
func (l *storeLayer) Compressed() (io.ReadCloser, error) {
	return l.s.OpenVerified(l.desc.Digest)
}

// Uncompressed opens the stored blob and decompresses it. The codec is
// recognised by its magic number (gzip, zstd, or none), not by the media
// type, which registries sometimes get wrong.
func (l *storeLayer) Uncompressed() (io.ReadCloser, error) {
	return OpenUncompressed(l.s, l.desc.Digest)
}

// OpenUncompressed opens the stored blob d and returns a reader of its
// uncompressed bytes, as Decompress recognises them. The blob is verified
// as it is read (content.Store.OpenVerified), which completes only if the
// reader reads the compressed stream to its end. Close the reader.
func OpenUncompressed(s *content.Store, d v1.Hash) (io.ReadCloser, error) {
	rc, err := s.OpenVerified(d)
	if err != nil {
		return nil, err
	}
	r, err := Decompress(rc)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("open layer %s: %w", d, err)
	}
	return r, nil
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Decompress returns a reader of the uncompressed bytes of rc, which may be
// gzip, zstd or not compressed at all (decided by its first bytes). Closing
// the result closes rc and releases the decoder.
func Decompress(rc io.ReadCloser) (io.ReadCloser, error) {
	src := &sourceReader{r: rc}
	br := bufio.NewReaderSize(src, 64<<10)
	head, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("detect compression: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open gzip: %w", err)
		}
		return &readCloser{Reader: &decoded{r: zr, src: src}, src: src, close: func() error {
			zerr := zr.Close()
			if err := rc.Close(); err != nil {
				return err
			}
			return zerr
		}}, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open zstd: %w", err)
		}
		return &readCloser{Reader: &decoded{r: zr, src: src}, src: src, close: func() error {
			zr.Close()
			return rc.Close()
		}}, nil
	default:
		return &readCloser{Reader: br, src: src, close: rc.Close}, nil
	}
}

// sourceReader keeps the first error of the compressed stream.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// decoded reads a decompressor. When it fails after its source did (a
// verifying reader found the blob corrupt, say), the source's error is the
// one reported: a checksum error of the codec would hide the cause.
type decoded struct {
	r   io.Reader
	src *sourceReader
}

func (d *decoded) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && d.src.err != nil {
		err = d.src.err
	}
	return n, err
}

type readCloser struct {
	io.Reader
	src   *sourceReader
	close func() error
}

// sourceError returns the first error reading the compressed stream under
// rc, a reader from Decompress, had; a codec fed corrupt bytes may decode
// garbage without an error of its own.
func sourceError(rc io.Reader) error {
	if r, ok := rc.(*readCloser); ok {
		return r.src.err
	}
	return nil
}

func (r *readCloser) Close() error { return r.close() }

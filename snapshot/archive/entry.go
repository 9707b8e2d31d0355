package archive

import (
	"archive/tar"
	"fmt"
	"io"
)

// WriteEntry writes an entry whose header the caller built rather than
// read from a file with Add: the header gets the same normalization as
// Add's, so a caller that fills it from the same metadata gets the same
// bytes. For a regular file, exactly h.Size bytes are copied from r; a
// shorter r is an error. Hard links are the caller's: WriteEntry does not
// track inodes.
func (w *Writer) WriteEntry(h *tar.Header, r io.Reader) error {
	normalize(h, w.epoch)
	if err := w.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write header %s: %w", h.Name, err)
	}
	if h.Typeflag != tar.TypeReg || h.Size == 0 {
		return nil
	}
	if w.buf == nil {
		w.buf = make([]byte, copyBufSize)
	}
	// Only Read, as in Add: large reads, large writes to the compressor.
	n, err := io.CopyBuffer(w.tw, struct{ io.Reader }{io.LimitReader(r, h.Size)}, w.buf)
	if err == nil && n < h.Size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", h.Name, err)
	}
	return nil
}

package copier

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// compression is a stream format recognised by its first bytes.
type compression int

const (
	uncompressed compression = iota
	gzipped
	bzipped
	xzipped
	zstded
)

var magics = []struct {
	c     compression
	magic []byte
}{
	{gzipped, []byte{0x1f, 0x8b, 0x08}},
	{bzipped, []byte("BZh")},
	{xzipped, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{zstded, []byte{0x28, 0xb5, 0x2f, 0xfd}},
}

// Decompress returns the decompressed content of r (gzip, bzip2, xz,
// zstd or none), detecting the format from the first bytes. The caller
// closes the result.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read archive header: %w", err)
	}
	c := uncompressed
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			c = m.c
			break
		}
	}
	switch c {
	case gzipped:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open gzip stream: %w", err)
		}
		return zr, nil
	case bzipped:
		return io.NopCloser(bzip2.NewReader(br)), nil
	case xzipped:
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open xz stream: %w", err)
		}
		return io.NopCloser(xr), nil
	case zstded:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("open zstd stream: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// isArchive reports whether f holds a tar archive, possibly compressed: the
// stream decompresses and its first tar header parses. It reads from the
// current offset and leaves the offset anywhere.
func isArchive(f *os.File) bool {
	r, err := Decompress(f)
	if err != nil {
		return false
	}
	defer r.Close()
	_, err = tar.NewReader(r).Next()
	return err == nil
}

// extract unpacks the item when it is an archive and reports whether it
// was one. The archive goes into destRel as a directory, created like
// BuildKit does (0755, owned by --chown).
func (w *writer) extract(it item, destRel string) (bool, error) {
	f, err := openBeneath(w.srcR.fd(), it.rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", it.name, err)
	}
	defer f.Close()
	st, err := fstat(f)
	if err != nil {
		return false, err
	}
	if st.Dev != it.st.Dev || st.Ino != it.st.Ino {
		return false, fmt.Errorf("read %s: %w", it.name, errChanged)
	}
	if !isArchive(f) {
		return false, nil
	}
	if w.req.Extract == nil {
		return false, fmt.Errorf("add %s: archive needs an extractor", it.name)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("rewind %s: %w", it.name, err)
	}
	uid, gid := w.createdOwner()
	d, err := w.mkdirAll(destRel, 0o755, uid, gid)
	if err != nil {
		return false, err
	}
	defer d.Close()
	r, err := Decompress(f)
	if err != nil {
		return false, fmt.Errorf("add %s: %w", it.name, err)
	}
	defer r.Close()
	var tr io.Reader = r
	if w.req.Chown != nil {
		cr := chownTar(r, w.req.Chown.UID, w.req.Chown.GID)
		defer cr.Close()
		tr = cr
	}
	// The extractor gets the directory opened beneath the root, by its fd:
	// a path string would be resolved again, and a component swapped for a
	// symlink meanwhile would lead it out of the root.
	if err := w.req.Extract(fdPath(d), tr); err != nil {
		return false, fmt.Errorf("extract %s: %w", it.name, err)
	}
	return true, nil
}

// chownRewriter streams a tar archive with every header's owner replaced.
type chownRewriter struct {
	pr   *io.PipeReader
	done chan struct{}
}

// chownTar returns the archive r with all entries owned by uid:gid. The
// caller must Close the result, which also stops the rewriting goroutine.
func chownTar(r io.Reader, uid, gid int) io.ReadCloser {
	pr, pw := io.Pipe()
	c := &chownRewriter{pr: pr, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		pw.CloseWithError(rewriteOwners(r, pw, uid, gid))
	}()
	return c
}

func (c *chownRewriter) Read(p []byte) (int, error) { return c.pr.Read(p) }

// Close stops the rewriter and waits for it.
func (c *chownRewriter) Close() error {
	c.pr.CloseWithError(errors.New("archive reader closed"))
	<-c.done
	return nil
}

func rewriteOwners(r io.Reader, w io.Writer, uid, gid int) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		hdr.Uid, hdr.Gid = uid, gid
		hdr.Uname, hdr.Gname = "", ""
		for _, k := range []string{"uid", "gid", "uname", "gname"} {
			delete(hdr.PAXRecords, k)
		}
		hdr.Format = tar.FormatUnknown
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("rewrite archive header %s: %w", hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("rewrite archive entry %s: %w", hdr.Name, err)
		}
	}
}

package archive

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"builder/snapshot/internal/fsutil"
)

// Whiteout names of the OCI image layer format.
const (
	WhiteoutPrefix = ".wh."
	OpaqueWhiteout = ".wh..wh..opq"
)

// Writer writes an uncompressed OCI layer tar with deterministic headers
// (see normalize). The caller adds entries in layer order: parents before
// children, siblings sorted by name. Regular files that are hard links of a
// file already added become hard-link entries naming the first path. A
// Writer is not safe for concurrent use.
type Writer struct {
	tw    *tar.Writer
	epoch *int64
	links map[fileID]string
	buf   []byte // file data passes through it, copyBufSize, made on first use
}

// copyBufSize is the read size of file data: large reads cut the syscalls
// of a big file (io.Copy of an *os.File reads 32 KiB at a time, into a
// buffer of its own per file) and hand the compressor large writes.
const copyBufSize = 1 << 20

type fileID struct{ dev, ino uint64 }

// NewWriter returns a Writer on w. Epoch, when non-nil, clamps every mtime
// to at most *epoch Unix seconds.
func NewWriter(w io.Writer, epoch *int64) *Writer {
	return &Writer{tw: tar.NewWriter(w), epoch: epoch, links: map[fileID]string{}}
}

// Add writes the file at path under the layer path name (slash-separated,
// relative to the layer root). It reads path with lstat, so a symlink is
// stored as a symlink, and streams a regular file's content. Sockets are
// skipped, as tar cannot hold them.
func (w *Writer) Add(name, path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	h := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix()),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		id := fileID{st.Dev, st.Ino}
		if first, ok := w.links[id]; ok && st.Nlink > 1 {
			h.Typeflag, h.Linkname = tar.TypeLink, first
		} else {
			h.Typeflag, h.Size = tar.TypeReg, st.Size
			if st.Nlink > 1 {
				w.links[id] = strings.TrimLeft(name, "/")
			}
		}
	case unix.S_IFDIR:
		h.Typeflag = tar.TypeDir
	case unix.S_IFLNK:
		target, err := os.Readlink(path)
		if err != nil {
			return fmt.Errorf("read link %s: %w", path, err)
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	default:
		return nil
	}
	xattrs, err := fsutil.Lxattrs(path)
	if err != nil {
		return err
	}
	for k, v := range xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = string(v)
	}
	normalize(h, w.epoch)
	if err := w.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write header %s: %w", h.Name, err)
	}
	if h.Typeflag != tar.TypeReg || h.Size == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if err != nil {
		// O_NOATIME is refused on files the caller does not own.
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	if w.buf == nil {
		w.buf = make([]byte, copyBufSize)
	}
	// Only Read: *os.File's WriteTo would bring back io.Copy's 32 KiB.
	if _, err := io.CopyBuffer(w.tw, struct{ io.Reader }{f}, w.buf); err != nil {
		return fmt.Errorf("copy %s: %w", path, err)
	}
	return nil
}

// AddWhiteout writes the whiteout entry that deletes the layer path name
// from the layers below.
func (w *Writer) AddWhiteout(name string) error {
	dir, base := path.Split(strings.TrimRight(name, "/"))
	return w.marker(dir + WhiteoutPrefix + base)
}

// AddOpaque writes the opaque whiteout that hides everything the layers
// below hold in the directory dir. Add it right after dir itself.
func (w *Writer) AddOpaque(dir string) error {
	return w.marker(path.Join(dir, OpaqueWhiteout))
}

func (w *Writer) marker(name string) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, ModTime: time.Unix(0, 0)}
	normalize(h, w.epoch)
	if err := w.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write header %s: %w", h.Name, err)
	}
	return nil
}

// Close writes the tar trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if err := w.tw.Close(); err != nil {
		return fmt.Errorf("finish layer tar: %w", err)
	}
	return nil
}

// normalize makes h deterministic: PAX format, no user or group names,
// mtime truncated to whole seconds and clamped to *epoch when epoch is set,
// no atime or ctime, device numbers only on devices, a name without a
// leading slash that ends in a slash for directories, and only the
// SCHILY.xattr records that belong in a layer (tar sorts PAX records by key
// when writing).
func normalize(h *tar.Header, epoch *int64) {
	h.Format = tar.FormatPAX
	h.Uname, h.Gname = "", ""
	mt := h.ModTime.Unix()
	if epoch != nil && mt > *epoch {
		mt = *epoch
	}
	h.ModTime = time.Unix(mt, 0)
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	if h.Typeflag != tar.TypeChar && h.Typeflag != tar.TypeBlock {
		h.Devmajor, h.Devminor = 0, 0
	}
	h.Name = strings.TrimLeft(h.Name, "/")
	if h.Typeflag == tar.TypeDir && !strings.HasSuffix(h.Name, "/") {
		h.Name += "/"
	}
	if h.Typeflag == tar.TypeLink {
		h.Linkname = strings.TrimLeft(h.Linkname, "/")
	}
	for k := range h.PAXRecords { // deleting while ranging is allowed
		if !strings.HasPrefix(k, "SCHILY.xattr.") || fsutil.Private(strings.TrimPrefix(k, "SCHILY.xattr.")) {
			delete(h.PAXRecords, k)
		}
	}
	if len(h.PAXRecords) == 0 {
		h.PAXRecords = nil
	}
	//lint:ignore SA1019 cleared so that only PAXRecords carry xattrs
	h.Xattrs = nil
}

// WriteTree writes the tree under dir (not dir itself) to w as a tar in
// lexical order, with the headers NewWriter gives, and closes the archive.
// It stops at the next entry once ctx is done.
func WriteTree(ctx context.Context, w io.Writer, dir string) error {
	aw := NewWriter(w, nil)
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		return aw.Add(filepath.ToSlash(rel), p)
	})
	if err != nil {
		return err
	}
	return aw.Close()
}

package content

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// errWriterDone is returned by a Writer used after Commit or Close.
var errWriterDone = errors.New("blob writer already committed or closed")

// Writer streams one blob into the store. It writes to a flock'ed temporary
// file in ingest/ and hashes the bytes as they pass. Commit moves the file
// into blobs/sha256; Close without Commit throws it away. A Writer is not
// safe for concurrent use; Close is always safe to call, also after Commit.
type Writer struct {
	s    *Store
	f    *os.File
	buf  *bufio.Writer
	h    hash.Hash
	n    int64
	done bool
}

// NewWriter starts a blob in ingest/. The caller must Commit or Close it.
func (s *Store) NewWriter() (*Writer, error) {
	// A concurrent Open may remove our file between its creation and our
	// flock (it can take the lock first); then the name no longer points to
	// our inode and we start over.
	for attempt := 0; attempt < 8; attempt++ {
		f, err := os.CreateTemp(s.ingestDir(), "blob-*")
		if err != nil {
			return nil, fmt.Errorf("create ingest file: %w", err)
		}
		fd := int(f.Fd())
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
			os.Remove(f.Name())
			f.Close()
			return nil, fmt.Errorf("lock ingest file: %w", err)
		}
		if !sameFile(fd, f.Name()) {
			f.Close()
			continue
		}
		if err := f.Chmod(0o600); err != nil {
			os.Remove(f.Name())
			f.Close()
			return nil, fmt.Errorf("chmod ingest file: %w", err)
		}
		return &Writer{s: s, f: f, buf: bufio.NewWriterSize(f, 256<<10), h: sha256.New()}, nil
	}
	return nil, errors.New("create ingest file: removed by concurrent cleanup too often")
}

// Write adds p to the blob.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errWriterDone
	}
	n, err := w.buf.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("write ingest file: %w", err)
	}
	return n, nil
}

// Digest returns the sha256 of the bytes written so far.
func (w *Writer) Digest() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(w.h.Sum(nil))}
}

// Size returns the number of bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Commit checks the written bytes against expected (a zero Hash skips the
// check), fsyncs them and renames the file to blobs/sha256/<hex>, then
// fsyncs that directory. A blob that is already stored is success. On a
// mismatch the error wraps ErrDigestMismatch and the temporary file is
// removed. After Commit, whatever its result, the Writer is done.
func (w *Writer) Commit(expected v1.Hash) error {
	if w.done {
		return errWriterDone
	}
	if err := w.buf.Flush(); err != nil {
		w.Close()
		return fmt.Errorf("commit blob: %w", err)
	}
	got := w.Digest()
	if expected != (v1.Hash{}) && expected != got {
		w.Close()
		return fmt.Errorf("commit blob: got %s, want %s: %w", got, expected, ErrDigestMismatch)
	}
	return w.commitTo(w.s.Path(got), w.s.blobDir(), false)
}

// commitTo fsyncs the file and renames it to dst in dir. Unless replace is
// set, an existing dst counts as success and the temporary is dropped; the
// existing file's mtime is refreshed, so automatic GC's grace period counts
// from the blob's last write.
func (w *Writer) commitTo(dst, dir string, replace bool) error {
	if err := w.buf.Flush(); err != nil {
		w.Close()
		return fmt.Errorf("commit blob: %w", err)
	}
	if !replace {
		if _, err := os.Lstat(dst); err == nil {
			touch(dst)
			return w.Close()
		} else if !errors.Is(err, fs.ErrNotExist) {
			w.Close()
			return fmt.Errorf("commit blob: %w", err)
		}
	}
	if err := w.f.Sync(); err != nil {
		w.Close()
		return fmt.Errorf("commit blob: sync: %w", err)
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		w.Close()
		return fmt.Errorf("commit blob: %w", err)
	}
	w.done = true
	cerr := w.f.Close()
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("commit blob: sync dir: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("commit blob: %w", cerr)
	}
	return nil
}

// Close discards an uncommitted blob: the temporary file is removed while
// still locked, then closed. It is idempotent and a no-op after Commit.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	rerr := os.Remove(w.f.Name())
	cerr := w.f.Close()
	if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return fmt.Errorf("remove ingest file: %w", rerr)
	}
	if cerr != nil {
		return fmt.Errorf("close ingest file: %w", cerr)
	}
	return nil
}

// touch sets p's mtime to now, best effort: a blob that is written again
// counts as new for GC's grace period.
func touch(p string) {
	now := time.Now()
	_ = os.Chtimes(p, now, now)
}

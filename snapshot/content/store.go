package content

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// FormatVersion is the version of the on-disk format described in the
// package documentation, recorded in <root>/content-version.
const FormatVersion = 1

// MaxConfigSize bounds an image config: the builder never writes a larger
// one, and every reader of configs in the store (export, GC, imagediff)
// reads at most this much. Real configs are kilobytes; 8 MiB leaves room
// for a stage environment at its 4 MiB limit with its history, and is the
// size registries commonly accept for a manifest.
const MaxConfigSize = 8 << 20

// ErrNotFound is returned when a blob is not in the store.
var ErrNotFound = errors.New("blob not found")

// ErrDigestMismatch is returned when written bytes do not hash to the
// expected digest; nothing is stored.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrInvalidDigest is returned for a digest that is not a sha256 digest in
// canonical form (64 lower-case hex digits).
var ErrInvalidDigest = errors.New("invalid digest")

// ErrUnsupportedVersion is returned by Open for a root written in another
// version of the on-disk format.
var ErrUnsupportedVersion = errors.New("unsupported content store version")

const (
	versionFile   = "content-version"
	ociLayoutFile = "oci-layout"
	ociLayout     = `{"imageLayoutVersion":"1.0.0"}`
)

// Store is a blob store rooted at a directory. See package doc for its
// format. A Store holds no open files or locks; it is safe for concurrent
// use by several goroutines and processes and needs no closing.
type Store struct {
	root      string
	tightened fs.FileMode // the root's mode before Open made it 0700; 0 if it was private
}

// LayerInfo describes a layer blob written by WriteLayer.
type LayerInfo struct {
	DiffID    v1.Hash // sha256 of the uncompressed tar
	Digest    v1.Hash // sha256 of the compressed blob
	Size      int64   // size of the compressed blob
	MediaType string  // OCI layer media type of the compression used
}

// Compile-time documentation of the API the rest of builder uses.
var _ interface {
	Path(d v1.Hash) string
	Has(d v1.Hash) bool
	Size(d v1.Hash) (int64, error)
	Open(d v1.Hash) (io.ReadCloser, error)
	WriteBlob(ctx context.Context, r io.Reader, expected v1.Hash) (v1.Hash, int64, error)
	WriteLayer(ctx context.Context, produce func(w io.Writer) error, opts LayerOptions) (LayerInfo, error)
} = (*Store)(nil)

// Open opens the store at root, creating root, blobs/sha256 and ingest/ as
// needed, and removes ingest files left behind by killed writers (those whose
// flock can be taken). It is idempotent and safe to call from concurrent
// processes.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{root: abs}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if s.tightened, err = makePrivate(abs); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	for _, dir := range []string{s.blobDir(), s.ingestDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	if err := s.checkVersion(); err != nil {
		return nil, err
	}
	if err := s.ensureFile(ociLayoutFile, []byte(ociLayout)); err != nil {
		return nil, fmt.Errorf("open store: write oci-layout: %w", err)
	}
	if err := s.cleanIngest(); err != nil {
		return nil, fmt.Errorf("open store: clean ingest: %w", err)
	}
	return s, nil
}

// makePrivate makes dir mode 0700 if group or others have any access to
// it, keeping no special bits, and returns the mode it had (0 if it was
// private already). It does not follow a symlink at dir's last component.
func makePrivate(dir string) (fs.FileMode, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return 0, err
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("%s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return 0, nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return 0, fmt.Errorf("make %s private: %w", dir, err)
	}
	return fi.Mode().Perm(), nil
}

// Tightened reports whether Open found the root open to other users and
// made it 0700, and the mode it had; the caller warns about it once.
func (s *Store) Tightened() (fs.FileMode, bool) { return s.tightened, s.tightened != 0 }

// Root returns the absolute path of the store root.
func (s *Store) Root() string { return s.root }

func (s *Store) blobDir() string   { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) ingestDir() string { return filepath.Join(s.root, "ingest") }

// checkVersion writes content-version into a new root and rejects a root
// written by another format version.
func (s *Store) checkVersion() error {
	want := fmt.Sprintf("%d\n", FormatVersion)
	got, err := os.ReadFile(filepath.Join(s.root, versionFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := s.ensureFile(versionFile, []byte(want)); err != nil {
			return fmt.Errorf("open store: write version: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("open store: read version: %w", err)
	case string(got) != want:
		return fmt.Errorf("open store %s: version %q: %w", s.root, strings.TrimSpace(string(got)), ErrUnsupportedVersion)
	}
	return nil
}

// ensureFile creates root/name with data unless it exists. The file is
// written in ingest/ and renamed, so concurrent callers never see it partly
// written; two racing callers write the same bytes.
func (s *Store) ensureFile(name string, data []byte) error {
	dst := filepath.Join(s.root, name)
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	w, err := s.NewWriter()
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.commitTo(dst, s.root, true)
}

// cleanIngest removes every ingest file whose writer is gone. A live writer
// holds an exclusive flock; a file whose lock we can take is stale. The
// inode check makes sure we remove the file we locked and not a new file
// that reused the name.
func (s *Store) cleanIngest() error {
	entries, err := os.ReadDir(s.ingestDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := removeIfUnlocked(filepath.Join(s.ingestDir(), e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func removeIfUnlocked(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) {
			// Not something a writer made; it cannot hold a lock.
			return os.RemoveAll(path)
		}
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil // a live writer
		}
		return &os.PathError{Op: "flock", Path: path, Err: err}
	}
	if !sameFile(fd, path) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// sameFile reports whether path still names the inode open as fd.
func sameFile(fd int, path string) bool {
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		return false
	}
	if err := unix.Lstat(path, &b); err != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// validate reports whether d is a sha256 digest in canonical form, the only
// kind the store holds.
func validate(d v1.Hash) error {
	if d.Algorithm != "sha256" || len(d.Hex) != 64 {
		return fmt.Errorf("%q: %w", d.String(), ErrInvalidDigest)
	}
	for i := 0; i < len(d.Hex); i++ {
		c := d.Hex[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%q: %w", d.String(), ErrInvalidDigest)
		}
	}
	return nil
}

// Path returns the file that holds blob d, whether or not it exists. For a
// digest that is not a canonical sha256 digest it returns "".
func (s *Store) Path(d v1.Hash) string {
	if validate(d) != nil {
		return ""
	}
	return filepath.Join(s.blobDir(), d.Hex)
}

// Has reports whether blob d is in the store.
func (s *Store) Has(d v1.Hash) bool {
	_, err := s.Size(d)
	return err == nil
}

// Size returns the size of blob d, or an error wrapping ErrNotFound.
func (s *Store) Size(d v1.Hash) (int64, error) {
	if err := validate(d); err != nil {
		return 0, fmt.Errorf("stat blob: %w", err)
	}
	fi, err := os.Lstat(s.Path(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("stat blob %s: %w", d, ErrNotFound)
		}
		return 0, fmt.Errorf("stat blob: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("stat blob %s: not a regular file", d)
	}
	return fi.Size(), nil
}

// Open opens blob d for reading. The returned value is an *os.File, so it
// also implements io.Seeker and io.ReaderAt. A missing blob gives an error
// wrapping ErrNotFound.
func (s *Store) Open(d v1.Hash) (io.ReadCloser, error) {
	if err := validate(d); err != nil {
		return nil, fmt.Errorf("open blob: %w", err)
	}
	f, err := os.OpenFile(s.Path(d), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open blob %s: %w", d, ErrNotFound)
		}
		return nil, fmt.Errorf("open blob: %w", err)
	}
	return f, nil
}

// ReadBlob reads the whole of blob d into memory and verifies it: a
// corrupt blob gives a *CorruptError but, unlike OpenVerified, stays where
// it is, so that ReadBlob only ever reads. It is meant for small blobs
// (manifests, configs); it refuses blobs larger than limit bytes.
func (s *Store) ReadBlob(d v1.Hash, limit int64) ([]byte, error) {
	rc, err := s.openChecked(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	if n > limit {
		return nil, fmt.Errorf("read blob %s: larger than %d bytes", d, limit)
	}
	return buf.Bytes(), nil
}

// Delete removes blob d and then its sidecar (sidecar.go), if any.
// Deleting a blob that is not there is not an error.
// Readers that already opened the blob keep reading it.
func (s *Store) Delete(d v1.Hash) error {
	if err := validate(d); err != nil {
		return fmt.Errorf("delete blob: %w", err)
	}
	if err := os.Remove(s.Path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob: %w", err)
	}
	if err := s.deleteSidecar(d); err != nil {
		return fmt.Errorf("delete blob: %w", err)
	}
	return nil
}

// Walk calls fn for every blob in the store, in lexical digest order. Files
// in blobs/sha256 that are not named by a canonical digest are skipped. An
// error from fn stops the walk and is returned unchanged.
func (s *Store) Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error {
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		return fmt.Errorf("walk blobs: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if validate(d) != nil || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("walk blobs: %w", err)
		}
		if err := fn(d, fi.Size()); err != nil {
			return err
		}
	}
	return nil
}

// WriteBlob streams r into the store and checks it against expected (a zero
// Hash skips the check). It is idempotent: if expected is already stored, r
// is not read at all and the stored size is returned. On a mismatch the error
// wraps ErrDigestMismatch and nothing is stored. Cancelling ctx stops the
// copy.
func (s *Store) WriteBlob(ctx context.Context, r io.Reader, expected v1.Hash) (v1.Hash, int64, error) {
	if expected != (v1.Hash{}) {
		if err := validate(expected); err != nil {
			return v1.Hash{}, 0, fmt.Errorf("write blob: %w", err)
		}
		if size, err := s.Size(expected); err == nil {
			touch(s.Path(expected))
			return expected, size, nil
		}
	}
	w, err := s.NewWriter()
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer w.Close()
	if _, err := io.Copy(w, &ctxReader{ctx: ctx, r: r}); err != nil {
		return v1.Hash{}, 0, fmt.Errorf("write blob: %w", err)
	}
	if err := w.Commit(expected); err != nil {
		return v1.Hash{}, 0, err
	}
	return w.Digest(), w.Size(), nil
}

// ContextReader returns a reader of r that fails once ctx is done, so a
// long copy stops at the next read after a cancellation.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return &ctxReader{ctx: ctx, r: r} }

// ContextWriter returns a writer to w that fails once ctx is done.
func ContextWriter(ctx context.Context, w io.Writer) io.Writer { return &ctxWriter{ctx: ctx, w: w} }

// ctxReader fails reads once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ctxWriter fails writes once its context is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

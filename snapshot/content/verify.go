package content

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrCorrupt is a stored blob whose bytes no longer hash to its name (a bad
// disk, a bug, a half-restored backup). Errors wrapping it are
// *CorruptError.
var ErrCorrupt = errors.New("blob in the store is corrupt")

// CorruptError names a stored blob that failed verification and what its
// bytes hash to. Its message points at `builder check --repair`.
type CorruptError struct {
	Digest  v1.Hash // the blob's name
	Got     v1.Hash // what its bytes hash to; zero when the size was wrong
	Size    int64   // bytes read
	Removed bool    // the corrupt file was removed from the store
}

func (e *CorruptError) Error() string {
	what := fmt.Sprintf("its %d bytes hash to %s", e.Size, e.Got)
	if e.Got == (v1.Hash{}) {
		what = fmt.Sprintf("it has %d bytes, not the size its descriptor gives", e.Size)
	}
	msg := fmt.Sprintf("blob %s in the store is corrupt: %s", e.Digest, what)
	if e.Removed {
		msg += "; it was removed, so the next build fetches or rebuilds it"
	}
	return msg + "; run `builder check --repair`"
}

// Is makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// OpenVerified opens blob d for reading and checks its bytes against d as
// they stream: one sha256 pass over what the caller reads anyway. The
// check completes when the blob's last byte has been read (its size is
// taken when it is opened, so a caller that reads exactly size bytes
// never needs to see io.EOF); a mismatch is reported then, by the Read
// that returns the last bytes, as a *CorruptError, and the corrupt file
// is removed from the store (only the file that was opened: a repaired
// blob renamed into its place meanwhile is left alone), so that the next
// build fetches or rebuilds it. Callers must treat the bytes already
// read as garbage once an error comes. A missing blob gives an error
// wrapping ErrNotFound.
func (s *Store) OpenVerified(d v1.Hash) (io.ReadCloser, error) {
	rc, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	f := rc.(*os.File)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	v := &verifier{s: s, f: f, d: d, size: fi.Size(), remove: true}
	if v.size >= overlapMin {
		v.h = newOverlapped(sha256.New())
	} else {
		v.h = syncHash{sha256.New()}
	}
	return v, nil
}

// openChecked is OpenVerified without the removal of a corrupt blob, for
// readers that must only read (ReadBlob, which `builder check` uses).
func (s *Store) openChecked(d v1.Hash) (io.ReadCloser, error) {
	rc, err := s.OpenVerified(d)
	if err != nil {
		return nil, err
	}
	rc.(*verifier).remove = false
	return rc, nil
}

// verifier is the reader OpenVerified returns.
type verifier struct {
	s      *Store
	f      *os.File
	d      v1.Hash
	size   int64
	n      int64
	h      summer
	err    error // sticky: the verdict, once reached
	done   bool
	remove bool // remove the blob if it is corrupt
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.done {
		if v.err != nil {
			return 0, v.err
		}
		return 0, io.EOF
	}
	if rest := v.size + 1 - v.n; int64(len(p)) > rest {
		p = p[:rest] // one byte more than the size shows a grown file
	}
	n, err := v.f.Read(p)
	v.h.write(p[:n])
	v.n += int64(n)
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("read blob %s: %w", v.d, err)
	}
	if v.n >= v.size || err == io.EOF {
		v.done = true
		v.err = v.verdict()
		if v.err != nil {
			return n, v.err
		}
	}
	return n, err
}

// verdict compares what was read with the blob's name and removes the file
// if it does not match.
func (v *verifier) verdict() error {
	got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(v.h.sum())}
	if v.n == v.size && got == v.d {
		return nil
	}
	e := &CorruptError{Digest: v.d, Got: got, Size: v.n}
	if v.remove {
		e.Removed = v.s.removeCorrupt(v.f, v.d)
	}
	return e
}

// removeCorrupt deletes blob d's file if it is still the inode open as f
// and reports whether it did.
func (s *Store) removeCorrupt(f *os.File, d v1.Hash) bool {
	if !sameFile(int(f.Fd()), s.Path(d)) {
		return false
	}
	if os.Remove(s.Path(d)) != nil {
		return false
	}
	_ = s.deleteSidecar(d)
	return true
}

func (v *verifier) Close() error {
	if !v.done {
		v.h.sum() // stops an overlapped hash's goroutine
	}
	return v.f.Close()
}

// overlapMin is the blob size from which a verifier hashes in a goroutine
// of its own; smaller blobs (configs, manifests) are hashed in line.
const overlapMin = 1 << 20

// summer hashes a stream; sum, called once, ends it.
type summer interface {
	write(p []byte)
	sum() []byte
}

// syncHash hashes in the caller's goroutine.
type syncHash struct{ h hash.Hash }

func (s syncHash) write(p []byte) { s.h.Write(p) }
func (s syncHash) sum() []byte    { return s.h.Sum(nil) }

// overlapped hashes in a goroutine of its own copies of what write hands
// it, so that the hash of a blob runs while the caller writes the bytes
// out: one sha256 pass that costs (on a second core) no time of its own.
// At most overlapSlots buffers are in flight; write waits for a free one.
type overlapped struct {
	h       hash.Hash
	work    chan []byte
	free    chan []byte
	made    int
	done    chan struct{}
	summed  []byte
	stopped bool
}

const overlapSlots, overlapBuf = 4, 256 << 10

func newOverlapped(h hash.Hash) *overlapped {
	o := &overlapped{h: h, work: make(chan []byte, overlapSlots), free: make(chan []byte, overlapSlots), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for p := range o.work {
			o.h.Write(p)
			o.free <- p[:0]
		}
	}()
	return o
}

func (o *overlapped) write(p []byte) {
	for len(p) > 0 {
		var buf []byte
		select {
		case buf = <-o.free:
		default:
			if o.made < overlapSlots {
				o.made++
				buf = make([]byte, 0, overlapBuf)
			} else {
				buf = <-o.free
			}
		}
		n := min(len(p), cap(buf))
		o.work <- append(buf, p[:n]...)
		p = p[n:]
	}
}

func (o *overlapped) sum() []byte {
	if !o.stopped {
		o.stopped = true
		close(o.work)
		<-o.done
		o.summed = o.h.Sum(nil)
	}
	return o.summed
}

// Verify reads blob d whole and reports whether its bytes hash to d: nil,
// a *CorruptError (the file is then removed as OpenVerified says), or the
// error that kept it from being read.
func (s *Store) Verify(d v1.Hash) error {
	rc, err := s.OpenVerified(d)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

package copier

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"builder/internal/atomicfile"
)

// statCacheMagic starts every stat cache file; change it when the format
// or the meaning of an entry changes.
const statCacheMagic = "builder-statcache/1\n"

// maxStatEntries caps a stat cache file. Beyond it, entries the last
// checksums did not use are dropped on Save.
const maxStatEntries = 200000

// StatCache remembers the SHA-256 and extended attributes of the regular
// files of one directory tree (a build context), so that Checksum does not
// read a file again while it is unchanged. An entry is keyed by the file's
// path below the tree and its stat identity: size, modification and change
// times in nanoseconds, inode, device and mode. Any write, truncate, chmod,
// chown, xattr change or replacement of the file changes its ctime or its
// inode, neither of which a user can set back, so a changed file is always
// read again, even when its size and mtime are the same.
//
// A file whose times are too recent when it is read is not remembered: a
// change within the same clock tick could otherwise leave its stat
// identity as it was ("racy" entries, as git calls them).
//
// A StatCache is safe for concurrent use. It lives in memory from
// OpenStatCache to Save; Save writes it to one file (temp file + rename, so
// readers see the old or the new version). A damaged or unreadable file is
// treated as empty: the cache only ever saves work.
type StatCache struct {
	root string // absolute tree the paths are below
	file string // where the cache is kept
	now  func() time.Time

	hits, reads atomic.Int64

	mu      sync.Mutex
	entries map[string]*statEntry
	changed bool
}

type statEntry struct {
	size, mtime, ctime int64
	ino, dev           uint64
	mode               uint32
	sum                [sha256.Size]byte
	xattrs             []xattr
	used               bool // looked up or stored since OpenStatCache
}

// OpenStatCache loads the stat cache of the tree root from the directory
// dir (created on Save), one file per tree. It fails only for an invalid
// root; a missing or damaged cache file gives an empty cache.
func OpenStatCache(dir, root string) (*StatCache, error) {
	abs, err := absClean(root)
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256([]byte(abs))
	c := &StatCache{root: abs, file: filepath.Join(dir, hex.EncodeToString(id[:16])+".stat"),
		now: time.Now, entries: map[string]*statEntry{}}
	if dt, err := os.ReadFile(c.file); err == nil {
		if ents, err := decodeStatCache(dt); err == nil {
			c.entries = ents
		}
	}
	return c, nil
}

// Root is the tree the cache belongs to.
func (c *StatCache) Root() string { return c.root }

// Len is the number of remembered files.
func (c *StatCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Stats says how many regular files checksums took from the cache and
// how many they read since OpenStatCache.
func (c *StatCache) Stats() (hits, reads int64) { return c.hits.Load(), c.reads.Load() }

// lookup returns the entry for the regular file rel if st still matches it.
func (c *StatCache) lookup(rel string, st *unix.Stat_t) (*statEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[rel]
	if !ok || !e.matches(st) {
		c.reads.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	e.used = true
	return e, true
}

// Sum returns the remembered SHA-256 of the content of the regular file
// rel (below the tree) if fi, its lstat, still matches what was read. It
// counts neither a hit nor a read, and a nil cache knows nothing.
func (c *StatCache) Sum(rel string, fi fs.FileInfo) ([sha256.Size]byte, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if c == nil || !ok {
		return [sha256.Size]byte{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[rel]
	if !ok || e.size != st.Size || e.mtime != st.Mtim.Nano() || e.ctime != st.Ctim.Nano() ||
		e.ino != uint64(st.Ino) || e.dev != uint64(st.Dev) || e.mode != uint32(st.Mode) {
		return [sha256.Size]byte{}, false
	}
	return e.sum, true
}

func (e *statEntry) matches(st *unix.Stat_t) bool {
	return e.size == st.Size && e.mtime == st.Mtim.Nano() && e.ctime == st.Ctim.Nano() &&
		e.ino == st.Ino && e.dev == st.Dev && e.mode == st.Mode
}

// racyWindow is how old a file's times must be, when its reading starts,
// for its digest to be remembered. File times come from a coarse clock;
// where they have no sub-second part the file system keeps whole seconds.
func racyWindow(st *unix.Stat_t) time.Duration {
	if st.Mtim.Nsec == 0 && st.Ctim.Nsec == 0 {
		return 2 * time.Second
	}
	return 100 * time.Millisecond
}

// store remembers the digest of the regular file rel, whose stat before
// reading (which started at readAt) was st.
func (c *StatCache) store(rel string, st *unix.Stat_t, readAt time.Time, sum [sha256.Size]byte, xattrs []xattr) {
	newest := max(st.Mtim.Nano(), st.Ctim.Nano())
	if readAt.UnixNano()-newest < int64(racyWindow(st)) {
		return
	}
	e := &statEntry{size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(), ino: st.Ino, dev: st.Dev,
		mode: st.Mode, sum: sum, xattrs: xattrs, used: true}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[rel] = e
	c.changed = true
}

// Save writes the cache to its file if it learned anything since
// OpenStatCache. It is idempotent and safe to call on a nil cache.
func (c *StatCache) Save() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.changed {
		return nil
	}
	if len(c.entries) > maxStatEntries {
		for k, e := range c.entries {
			if !e.used {
				delete(c.entries, k)
			}
		}
	}
	dir := filepath.Dir(c.file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save stat cache: %w", err)
	}
	err := atomicfile.Write(c.file, 0o600, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 256<<10)
		if err := encodeStatCache(bw, c.entries); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		return fmt.Errorf("save stat cache: %w", err)
	}
	c.changed = false
	return nil
}

// The file is the magic line, the entry count, the entries and a SHA-256
// of everything before it. Numbers are varints.
func encodeStatCache(w io.Writer, ents map[string]*statEntry) error {
	h := sha256.New()
	mw := io.MultiWriter(w, h)
	var buf []byte
	buf = append(buf, statCacheMagic...)
	buf = binary.AppendUvarint(buf, uint64(len(ents)))
	for rel, e := range ents {
		buf = appendBytes(buf, []byte(rel))
		buf = binary.AppendVarint(buf, e.size)
		buf = binary.AppendVarint(buf, e.mtime)
		buf = binary.AppendVarint(buf, e.ctime)
		buf = binary.AppendUvarint(buf, e.ino)
		buf = binary.AppendUvarint(buf, e.dev)
		buf = binary.AppendUvarint(buf, uint64(e.mode))
		buf = append(buf, e.sum[:]...)
		buf = binary.AppendUvarint(buf, uint64(len(e.xattrs)))
		for _, x := range e.xattrs {
			buf = appendBytes(buf, []byte(x.name))
			buf = appendBytes(buf, x.value)
		}
		if len(buf) >= 64<<10 {
			if _, err := mw.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if _, err := mw.Write(buf); err != nil {
		return err
	}
	_, err := w.Write(h.Sum(nil))
	return err
}

func appendBytes(buf, b []byte) []byte {
	return append(binary.AppendUvarint(buf, uint64(len(b))), b...)
}

var errBadStatCache = errors.New("damaged stat cache")

func decodeStatCache(dt []byte) (map[string]*statEntry, error) {
	if len(dt) < len(statCacheMagic)+sha256.Size || !strings.HasPrefix(string(dt), statCacheMagic) {
		return nil, errBadStatCache
	}
	body, trailer := dt[:len(dt)-sha256.Size], dt[len(dt)-sha256.Size:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], trailer) {
		return nil, errBadStatCache
	}
	r := &byteReader{b: body[len(statCacheMagic):]}
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return nil, errBadStatCache
	}
	ents := make(map[string]*statEntry, n)
	for range n {
		rel := string(r.bytes())
		e := &statEntry{size: r.varint(), mtime: r.varint(), ctime: r.varint(), ino: r.uvarint(), dev: r.uvarint(),
			mode: uint32(r.uvarint())}
		copy(e.sum[:], r.next(sha256.Size))
		nx := r.uvarint()
		if nx > uint64(len(r.b)) {
			return nil, errBadStatCache
		}
		for range nx {
			e.xattrs = append(e.xattrs, xattr{name: string(r.bytes()), value: bytes.Clone(r.bytes())})
		}
		if r.err != nil {
			return nil, r.err
		}
		ents[rel] = e
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, errBadStatCache
	}
	return ents, nil
}

// byteReader reads varints and length-prefixed bytes; the first short
// read sets err and makes every later read return zero values.
type byteReader struct {
	b   []byte
	err error
}

func (r *byteReader) next(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = errBadStatCache
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *byteReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBadStatCache
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errBadStatCache
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errBadStatCache
		return nil
	}
	return r.next(int(n))
}

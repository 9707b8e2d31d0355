// Package cachemount owns the persistent directories of RUN
// --mount=type=cache under one base directory (<root>/cachemounts of a
// store). Each cache id gets the directory <base>/<sha256 of id>, so no id
// can name a path outside base, and the lock file <dir>.lock, on which
// users take flock(2) locks as the mount's sharing asks: "shared" (the
// default) a shared lock, "locked" an exclusive one, "private" an
// exclusive one on the first of <hash>, <hash>-1, ... that nobody holds.
// A directory is created, seeded or restored in a temporary directory
// under base and renamed into place, so nobody ever sees one half made.
package cachemount

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// Dirs owns the cache mount directories under one base directory. It
// holds no state besides base; all coordination between builds, also
// between processes, goes through the lock files.
type Dirs struct {
	base string
}

// New returns the cache mount directories under base, which is created
// when first needed.
func New(base string) *Dirs {
	return &Dirs{base: base}
}

// Mount describes one use of a cache mount.
type Mount struct {
	ID      string // the cache's identity, any string
	Sharing string // "shared" (also ""), "locked" or "private"
	// Source is the sub-path of the cache that is mounted, cleaned and
	// relative ("" for the whole cache); it is created if missing.
	Source string
	// Mode, UID and GID are the new directory's mode (default 0755) and
	// owner (default 0:0).
	Mode, UID, GID *uint64
}

// Paths returns the directory of cache id and its lock file.
func (d *Dirs) Paths(id string) (dir, lock string) {
	sum := sha256.Sum256([]byte(id))
	name := hex.EncodeToString(sum[:])
	return filepath.Join(d.base, name), filepath.Join(d.base, name+".lock")
}

// Acquire returns the directory of a cache mount, created with the
// mount's mode and owner (and filled by seed, if not nil, before it is
// renamed into place) if it does not exist, with the mount's Source
// created inside it by fd (the sandbox resolves that inside the directory
// again when it mounts it), and locked as its sharing asks, waiting for
// the lock until ctx ends. release drops the lock; it is safe to call
// once.
func (d *Dirs) Acquire(ctx context.Context, m Mount, seed func(dir string) error) (string, func(), error) {
	if err := os.MkdirAll(d.base, 0o700); err != nil {
		return "", nil, fmt.Errorf("create cache mount: %w", err)
	}
	dir, lockPath := d.Paths(m.ID)
	var lock *os.File
	var err error
	switch m.Sharing {
	case "private":
		for i := 0; lock == nil; i++ {
			if i == 256 {
				return "", nil, fmt.Errorf("cache mount %s: too many private copies in use", m.ID)
			}
			n := dir
			if i > 0 {
				n += "-" + strconv.Itoa(i)
			}
			var ok bool
			lock, ok, err = flock(n+".lock", unix.LOCK_EX|unix.LOCK_NB)
			if err != nil {
				return "", nil, fmt.Errorf("lock cache mount %s: %w", m.ID, err)
			}
			if ok {
				dir = n
			}
		}
	case "locked":
		lock, err = waitLock(ctx, lockPath, unix.LOCK_EX)
	default:
		lock, err = waitLock(ctx, lockPath, unix.LOCK_SH)
	}
	if err != nil {
		return "", nil, fmt.Errorf("lock cache mount %s: %w", m.ID, err)
	}
	release := func() { lock.Close() }
	if err := d.makeDir(dir, m, seed); err != nil {
		release()
		return "", nil, fmt.Errorf("create cache mount %s: %w", m.ID, err)
	}
	// The directory's mtime tells prune when the cache was last used.
	now := time.Now()
	_ = os.Chtimes(dir, now, now)
	if m.Source != "" {
		if err := mkdirInRoot(dir, m.Source); err != nil {
			release()
			return "", nil, fmt.Errorf("create cache mount %s: source /%s: %w", m.ID, m.Source, err)
		}
	}
	return dir, release, nil
}

// ReadLock takes the shared lock of cache id, as a shared mount of it
// does, waiting for it until ctx ends: a "locked" mount or a restore of
// the cache waits for release. release is safe to call once.
func (d *Dirs) ReadLock(ctx context.Context, id string) (release func(), err error) {
	_, lockPath := d.Paths(id)
	lock, err := waitLock(ctx, lockPath, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	return func() { lock.Close() }, nil
}

// Restore fills the directory of a cache mount by calling fill on a new
// temporary directory, but only if the cache's directory is missing or
// empty; it reports whether fill ran. It holds the cache's exclusive lock
// meanwhile (a mount of the cache waits for it), and renames the filled
// directory into place with the mode and owner the cache's directory has
// (or gets from m), so nobody ever sees a half-restored cache. Nothing is
// changed when fill fails.
func (d *Dirs) Restore(ctx context.Context, m Mount, fill func(dir string) error) (bool, error) {
	dir, lockPath := d.Paths(m.ID)
	if err := os.MkdirAll(d.base, 0o700); err != nil {
		return false, fmt.Errorf("restore cache mount %s: %w", m.ID, err)
	}
	lock, err := waitLock(ctx, lockPath, unix.LOCK_EX)
	if err != nil {
		return false, fmt.Errorf("lock cache mount %s: %w", m.ID, err)
	}
	defer lock.Close()
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return false, nil // the cache has its own content, which wins
	}
	tmp, err := os.MkdirTemp(d.base, ".new-")
	if err != nil {
		return false, fmt.Errorf("restore cache mount %s: %w", m.ID, err)
	}
	if err := fill(tmp); err != nil {
		os.RemoveAll(tmp)
		return false, fmt.Errorf("restore cache mount %s: %w", m.ID, err)
	}
	if err := d.makeDir(dir, m, nil); err != nil {
		os.RemoveAll(tmp)
		return false, fmt.Errorf("restore cache mount %s: %w", m.ID, err)
	}
	fi, err := os.Stat(dir)
	if err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		err = os.Lchown(tmp, int(st.Uid), int(st.Gid))
	}
	if err == nil {
		err = os.Chmod(tmp, fi.Mode()&(os.ModePerm|os.ModeSticky|os.ModeSetgid))
	}
	if err == nil {
		err = os.Remove(dir) // empty, and ours while we hold the lock
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return false, fmt.Errorf("restore cache mount %s: %w", m.ID, err)
	}
	return true, nil
}

// makeDir creates dir with the mount's mode and owner if it does not
// exist, atomically: a temporary directory, filled by seed if not nil,
// renamed into place.
func (d *Dirs) makeDir(dir string, m Mount, seed func(dir string) error) error {
	if _, err := os.Lstat(dir); err == nil {
		return nil
	}
	tmp, err := os.MkdirTemp(d.base, ".new-")
	if err != nil {
		return err
	}
	mode := os.FileMode(0o755)
	if m.Mode != nil {
		mode = os.FileMode(*m.Mode) & (os.ModePerm | os.ModeSticky)
		if *m.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
	}
	uid, gid := 0, 0
	if m.UID != nil {
		uid = int(*m.UID)
	}
	if m.GID != nil {
		gid = int(*m.GID)
	}
	if err := os.Lchown(tmp, uid, gid); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	if seed != nil {
		if err := seed(tmp); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("seed: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Lstat(dir); serr == nil {
			return nil // made meanwhile by another build
		}
		return err
	}
	return nil
}

// mkdirInRoot creates the directory p and its parents inside root, as if
// root were "/", by fd: whatever another build renames meanwhile, nothing
// is created outside root.
func mkdirInRoot(root, p string) error {
	r, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer r.Close()
	d, err := pathrs.MkdirAllHandle(r, p, 0o755)
	if err != nil {
		return err
	}
	return d.Close()
}

// flock opens (creating) the lock file p and tries to take the lock how.
func flock(p string, how int) (*os.File, bool, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return f, true, nil
}

// waitLock opens (creating) the lock file p and takes the flock(2) lock
// how (unix.LOCK_SH or unix.LOCK_EX) on it, polling so that ctx can stop
// the wait. Closing the file drops the lock.
func waitLock(ctx context.Context, p string, how int) (*os.File, error) {
	delay := 5 * time.Millisecond
	for {
		f, ok, err := flock(p, how|unix.LOCK_NB)
		if err != nil || ok {
			return f, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

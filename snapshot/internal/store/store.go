// Package store keeps the on-disk state both snapshotters share: where
// snapshots live, what they record, who owns an active snapshot, and how
// leftovers of killed processes are cleaned up.
//
// Layout below the root:
//
//	<id>/meta.json     committed snapshot: name, parent, ancestor ids
//	<id>/fs/           its tree (overlay: the layer's upper directory)
//	active/<kid>.lock  flock held by the process that owns active snapshot
//	active/<kid>/      active snapshot: meta.json (key, parent, ancestors),
//	                   fs/ and whatever the snapshotter adds (overlay: work/)
//	tmp/               trash-* directories being deleted, probe-* directories
//	probe.json         overlay only: its remembered probe (overlay.ProbeFile)
//
// Ids are the first 16 hex digits of a SHA-256 of the kind and name, short so
// that an overlay lowerdir list of many layers stays well under a page.
//
// A committed snapshot appears atomically: its directory is complete before
// it is renamed into place. An active snapshot is owned by the process
// holding the flock on its lock file; Open removes every active snapshot
// whose lock it can take, since its owner is dead. Several processes may use
// one root at once.
//
// store.go keeps the layout, the metadata and the crash clean-up together
// (~560 lines), since each reads the others' invariants.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"builder/internal/atomicfile"
)

// ErrNotFound is returned for a snapshot name or key that does not exist.
var ErrNotFound = errors.New("snapshot not found")

// ErrExists is returned by Prepare for a key that is already active.
var ErrExists = errors.New("snapshot key already exists")

// DiffOptions tunes the tar stream that Diff writes.
type DiffOptions struct {
	// Epoch, when non-nil, clamps every entry's mtime to at most *Epoch
	// (Unix seconds), as SOURCE_DATE_EPOCH asks.
	Epoch *int64
}

// Info is the meta.json of a snapshot.
type Info struct {
	Name   string   `json:"name,omitempty"` // committed snapshots
	Key    string   `json:"key,omitempty"`  // active snapshots
	Parent string   `json:"parent,omitempty"`
	Lowers []string `json:"lowers,omitempty"` // ids of the ancestors, parent first
}

// Store is one snapshot root. It is safe for concurrent use.
type Store struct {
	root  string
	mu    sync.Mutex
	locks map[string]*os.File // lock files of the active keys this Store owns
}

const probeMaxAge = 10 * time.Minute

// Open creates the layout below root if needed and removes what killed
// processes left: active snapshots nobody holds a lock on, trash, and old
// probe directories. It is safe to call while other processes use root.
func Open(root string) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open snapshot root: %w", err)
	}
	for _, d := range []string{root, filepath.Join(root, "active"), filepath.Join(root, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open snapshot root: %w", err)
		}
	}
	s := &Store{root: root, locks: map[string]*os.File{}}
	if err := s.cleanup(); err != nil {
		return nil, err
	}
	return s, nil
}

// Root returns the absolute root directory.
func (s *Store) Root() string { return s.root }

// TmpDir returns the directory for short-lived private directories.
func (s *Store) TmpDir() string { return filepath.Join(s.root, "tmp") }

// ID returns the directory name of the committed snapshot name.
func ID(name string) string { return hashID("committed", name) }

func hashID(kind, name string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + name))
	return hex.EncodeToString(sum[:8])
}

// FS returns the tree directory of the committed snapshot with id.
func (s *Store) FS(id string) string { return filepath.Join(s.root, id, "fs") }

// ActiveDir returns the directory of the active snapshot key.
func (s *Store) ActiveDir(key string) string {
	return filepath.Join(s.root, "active", hashID("active", key))
}

func (s *Store) lockPath(key string) string { return s.ActiveDir(key) + ".lock" }

func readInfo(dir string) (Info, error) {
	var info Info
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if errors.Is(err, os.ErrNotExist) {
		return info, ErrNotFound
	}
	if err != nil {
		return info, fmt.Errorf("read snapshot meta: %w", err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("parse %s: %w", filepath.Join(dir, "meta.json"), err)
	}
	return info, nil
}

// writeInfo replaces dir/meta.json atomically but syncs nothing: both
// callers write into an active snapshot, which a crash leaves to Open's
// clean-up whatever its meta says, and Commit syncs the whole file system
// (meta.json with it) before the rename that makes the directory a
// committed snapshot. Two fsyncs of the file and two of the directory per
// RUN step were spent here before (issue 19).
func writeInfo(dir string, info Info) error {
	b, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode snapshot meta: %w", err)
	}
	if err := atomicfile.WriteFileNoSync(filepath.Join(dir, "meta.json"), b, 0o600); err != nil {
		return fmt.Errorf("write snapshot meta: %w", err)
	}
	return nil
}

// Committed returns the id and meta of the committed snapshot name, or an
// error wrapping ErrNotFound.
func (s *Store) Committed(name string) (string, Info, error) {
	id := ID(name)
	info, err := readInfo(filepath.Join(s.root, id))
	if err == nil && info.Name != name {
		err = fmt.Errorf("snapshot id %s holds %q, not %q", id, info.Name, name)
	}
	if err != nil {
		return "", Info{}, fmt.Errorf("snapshot %q: %w", name, err)
	}
	return id, info, nil
}

// Exists reports whether the committed snapshot name is present.
func (s *Store) Exists(name string) bool {
	_, _, err := s.Committed(name)
	return err == nil
}

// Active returns the directory and meta of the active snapshot key, or an
// error wrapping ErrNotFound.
func (s *Store) Active(key string) (string, Info, error) {
	dir := s.ActiveDir(key)
	info, err := readInfo(dir)
	if err == nil && info.Key != key {
		err = fmt.Errorf("active id %s holds %q, not %q", filepath.Base(dir), info.Key, key)
	}
	if err != nil {
		return "", Info{}, fmt.Errorf("snapshot key %q: %w", key, err)
	}
	return dir, info, nil
}

// Prepare creates the active snapshot key on the committed snapshot parent
// ("" for none): it takes the key's lock, makes the directory with its
// meta.json and an empty fs/, and calls build with the directory and the
// parent's tree ("" for none) to fill in the rest. On any error nothing is
// left behind. The lock stays held until Commit or Remove.
func (s *Store) Prepare(ctx context.Context, key, parent string, build func(dir, parentFS string) error) (string, Info, error) {
	if err := ctx.Err(); err != nil {
		return "", Info{}, err
	}
	info := Info{Key: key, Parent: parent}
	parentFS := ""
	if parent != "" {
		pid, pinfo, err := s.Committed(parent)
		if err != nil {
			return "", Info{}, err
		}
		info.Lowers = append([]string{pid}, pinfo.Lowers...)
		parentFS = s.FS(pid)
	}
	s.mu.Lock()
	if _, ok := s.locks[key]; ok {
		s.mu.Unlock()
		return "", Info{}, fmt.Errorf("prepare %q: %w", key, ErrExists)
	}
	lock, err := s.lock(key)
	if err == nil {
		s.locks[key] = lock
	}
	s.mu.Unlock()
	if err != nil {
		return "", Info{}, fmt.Errorf("prepare %q: %w", key, err)
	}
	dir := s.ActiveDir(key)
	err = func() error {
		// A directory under a lock we could take is a dead owner's.
		if err := s.trash(dir); err != nil {
			return err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if err := os.Mkdir(filepath.Join(dir, "fs"), 0o755); err != nil {
			return err
		}
		if err := writeInfo(dir, info); err != nil {
			return err
		}
		return build(dir, parentFS)
	}()
	if err != nil {
		cerr := s.trash(dir)
		s.mu.Lock()
		delete(s.locks, key)
		s.mu.Unlock()
		s.unlock(lock, key)
		return "", Info{}, errors.Join(fmt.Errorf("prepare %q: %w", key, err), cerr)
	}
	return dir, info, nil
}

// lock takes the lock of key: open or create the lock file, flock it
// without waiting, and make sure the path still names the locked file (a
// cleanup may have unlinked it meanwhile). A lock held elsewhere gives
// ErrExists.
func (s *Store) lock(key string) (*os.File, error) {
	p := s.lockPath(key)
	for range 100 {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open lock: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, ErrExists
			}
			return nil, fmt.Errorf("lock: %w", err)
		}
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(p, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			return f, nil
		}
		f.Close()
	}
	return nil, errors.New("lock: lock file keeps changing")
}

// unlock deletes and releases a lock taken by lock.
func (s *Store) unlock(f *os.File, key string) {
	_ = os.Remove(s.lockPath(key))
	f.Close()
}

// take removes the lock of key from the Store's table and returns it,
// taking the lock file if this Store did not hold it. While one goroutine
// has taken a key, others get an "in use" error for it. Hand the lock back
// with put, or release it with unlock.
func (s *Store) take(key string) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.locks[key]; ok {
		delete(s.locks, key)
		return f, nil
	}
	f, err := s.lock(key)
	if errors.Is(err, ErrExists) {
		return nil, fmt.Errorf("snapshot key %q is in use", key)
	}
	return f, err
}

func (s *Store) put(key string, f *os.File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.locks[key] = f
}

// Commit turns the active snapshot key into the committed snapshot name:
// finish prepares the directory (e.g. drops overlay's work/), the meta is
// rewritten, the file system synced, and the directory renamed into place
// in one step. If name exists already, key is removed (if it is still
// there) and nil returned, so Commit is idempotent.
func (s *Store) Commit(name, key string, finish func(dir string) error) error {
	if s.Exists(name) {
		return s.Remove(key)
	}
	dir, info, err := s.Active(key)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	lock, err := s.take(key)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	err = func() error {
		if err := finish(dir); err != nil {
			return err
		}
		info.Name, info.Key = name, ""
		if err := writeInfo(dir, info); err != nil {
			return err
		}
		// One syncfs makes the tree and meta.json durable before the
		// rename publishes them: records that name the snapshot are
		// written after Commit returns.
		if err := syncfs(dir); err != nil {
			return err
		}
		return renameNoReplace(dir, filepath.Join(s.root, ID(name)))
	}()
	if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
		// Another process committed the same name first.
		err = s.trash(dir)
	} else if err != nil {
		s.put(key, lock)
		return fmt.Errorf("commit %q: %w", name, err)
	}
	s.unlock(lock, key)
	return err
}

// Remove deletes the active snapshot key. A key that does not exist is not
// an error.
func (s *Store) Remove(key string) error {
	lock, err := s.take(key)
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	err = s.trash(s.ActiveDir(key))
	s.unlock(lock, key)
	if err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	return nil
}

// trash deletes dir: it first renames it into tmp/, so the deletion looks
// atomic to other users of the root, and a crash leaves only trash that
// Open clears. A missing dir is not an error.
func (s *Store) trash(dir string) error {
	t, err := os.MkdirTemp(s.TmpDir(), "trash-")
	if err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	err = os.Rename(dir, filepath.Join(t, "d"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(t)
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	if err := os.RemoveAll(t); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

func (s *Store) cleanup() error {
	ents, err := os.ReadDir(filepath.Join(s.root, "active"))
	if err != nil {
		return fmt.Errorf("clean snapshot root: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		kid := strings.TrimSuffix(e.Name(), ".lock")
		if seen[kid] {
			continue
		}
		seen[kid] = true
		if err := s.cleanActive(kid); err != nil {
			return err
		}
	}
	ents, err = os.ReadDir(s.TmpDir())
	if err != nil {
		return fmt.Errorf("clean snapshot root: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(s.TmpDir(), e.Name())
		switch {
		case strings.HasPrefix(e.Name(), "trash-"):
		case strings.HasPrefix(e.Name(), "probe-"):
			fi, err := e.Info()
			if err != nil || time.Since(fi.ModTime()) < probeMaxAge {
				continue
			}
		default:
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("clean snapshot root: %w", err)
		}
	}
	return nil
}

// cleanActive removes the active snapshot with id kid if no live process
// holds its lock. The lock is taken by path, as the key is unknown.
func (s *Store) cleanActive(kid string) error {
	dir := filepath.Join(s.root, "active", kid)
	p := dir + ".lock"
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("clean snapshot root: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil // its owner lives
		}
		return fmt.Errorf("clean snapshot root: lock: %w", err)
	}
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(p, &b) != nil || a.Ino != b.Ino {
		return nil // replaced meanwhile; leave it to its new owner
	}
	if err := s.trash(dir); err != nil {
		return fmt.Errorf("clean snapshot root: %w", err)
	}
	_ = os.Remove(p)
	return nil
}

func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_NOREPLACE here; a committed directory is never empty,
		// so a plain rename onto one fails with ENOTEMPTY instead.
		err = unix.Rename(from, to)
	}
	if err != nil {
		return fmt.Errorf("rename %s: %w", from, err)
	}
	return nil
}

func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// NewProbeDir creates an empty private directory below tmp/ for a feature
// probe; Open removes ones older than ten minutes.
func (s *Store) NewProbeDir() (string, error) {
	d, err := os.MkdirTemp(s.TmpDir(), "probe-")
	if err != nil {
		return "", fmt.Errorf("create probe dir: %w", err)
	}
	return d, nil
}

// ErrInUse is returned by Delete for a committed snapshot that another
// snapshot (committed or active) is built on.
var ErrInUse = errors.New("snapshot is a parent of another snapshot")

// List returns the meta of every committed snapshot, in no set order. It
// reads only, and tolerates snapshots appearing or disappearing meanwhile.
func (s *Store) List() ([]Info, error) {
	ents, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var out []Info
	for _, e := range ents {
		if !e.IsDir() || e.Name() == "active" || e.Name() == "tmp" {
			continue
		}
		info, err := readInfo(filepath.Join(s.root, e.Name()))
		if err != nil || info.Name == "" || ID(info.Name) != e.Name() {
			continue
		}
		out = append(out, info)
	}
	return out, nil
}

// Delete removes the committed snapshot name. It refuses, with an error
// wrapping ErrInUse, while any committed or active snapshot has name among
// its ancestors, so children must be deleted first. Deleting a name that is
// not there is not an error. The caller keeps other processes from
// preparing snapshots on name meanwhile (builder's store lock does).
func (s *Store) Delete(name string) error {
	id := ID(name)
	if !s.Exists(name) {
		return nil
	}
	users := func(dir string) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !e.IsDir() || e.Name() == "active" || e.Name() == "tmp" || e.Name() == id {
				continue
			}
			info, err := readInfo(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			for _, l := range info.Lowers {
				if l == id {
					return fmt.Errorf("delete %q: %w (%s)", name, ErrInUse, info.Name+info.Key)
				}
			}
		}
		return nil
	}
	if err := users(s.root); err != nil {
		return err
	}
	if err := users(filepath.Join(s.root, "active")); err != nil {
		return err
	}
	if err := s.trash(filepath.Join(s.root, id)); err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	return nil
}

// Dir returns the directory of the committed snapshot name, whether or not
// it exists, for measuring its disk use.
func (s *Store) Dir(name string) string { return filepath.Join(s.root, ID(name)) }

// Listed describes a committed snapshot for List.
type Listed struct {
	Name   string // the snapshot's name (its chain ID for builder)
	Parent string // the parent's name, "" for none
	Dir    string // the directory that holds it
}

// Listed returns every committed snapshot with its directory.
func (s *Store) Listed() ([]Listed, error) {
	infos, err := s.List()
	if err != nil {
		return nil, err
	}
	out := make([]Listed, len(infos))
	for i, in := range infos {
		out[i] = Listed{Name: in.Name, Parent: in.Parent, Dir: s.Dir(in.Name)}
	}
	return out, nil
}

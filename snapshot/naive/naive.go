// Package naive is the copy-based snapshotter for machines without
// overlayfs: every snapshot holds a full tree, Prepare copies the parent's
// tree, and Diff compares the active tree with the parent's in one sorted
// walk of both. It writes the same layer tar as the overlay snapshotter for
// the same change, except that a directory replaced by a new one is
// written as whiteouts of its old children instead of an opaque directory.
package naive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"builder/snapshot/archive"
	"builder/snapshot/internal/fsutil"
	"builder/snapshot/internal/store"
	"builder/snapshot/mount"
)

// Snapshotter implements snapshot.Snapshotter by copying trees. It is safe
// for concurrent use by goroutines and by processes sharing one root.
type Snapshotter struct {
	st *store.Store
}

// New opens (creating if needed) a naive snapshot root at root and cleans up
// what killed processes left there.
func New(root string) (*Snapshotter, error) {
	st, err := store.Open(root)
	if err != nil {
		return nil, err
	}
	return &Snapshotter{st: st}, nil
}

// Prepare creates the active snapshot key as a copy of parent's tree ("" for
// an empty tree), preserving modes, owners, xattrs, hard links, devices and
// times. Its mount is a bind mount of the copy.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string) ([]mount.Mount, error) {
	dir, _, err := s.st.Prepare(ctx, key, parent, func(dir, parentFS string) error {
		if parentFS == "" {
			return nil
		}
		c := copier{ctx: ctx, links: map[[2]uint64]string{}}
		return c.copyTree(parentFS, filepath.Join(dir, "fs"))
	})
	if err != nil {
		return nil, err
	}
	return []mount.Mount{{Type: "bind", Source: filepath.Join(dir, "fs"), Options: []string{"rbind", "rw"}}}, nil
}

// View returns a read-only bind mount of the committed snapshot name.
func (s *Snapshotter) View(ctx context.Context, name string) ([]mount.Mount, error) {
	id, _, err := s.st.Committed(name)
	if err != nil {
		return nil, err
	}
	return []mount.Mount{{Type: "bind", Source: s.st.FS(id), Options: []string{"rbind", "ro"}}}, nil
}

// Commit turns the active snapshot key into the committed snapshot name by
// renaming it into place. If name exists already, key is removed and nil
// returned. The snapshot must not be mounted.
func (s *Snapshotter) Commit(ctx context.Context, name, key string) error {
	return s.st.Commit(name, key, func(string) error { return nil })
}

// Remove deletes the active snapshot key; a missing key is not an error.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	return s.st.Remove(key)
}

// Exists reports whether the committed snapshot name is present.
func (s *Snapshotter) Exists(ctx context.Context, name string) bool {
	return s.st.Exists(name)
}

// TmpDir returns a directory on the snapshot file system for short-lived
// private directories such as mount points.
func (s *Snapshotter) TmpDir() string { return s.st.TmpDir() }

// Diff writes the change of the active snapshot key against its parent as
// a layer tar. An entry counts as changed when its type, mode, owner,
// size, mtime (to the nanosecond), link target, device or xattrs differ,
// or, for regular files whose mtime has no sub-second part (so it may have
// been set from a tar), when their contents differ. A removed path is one
// whiteout, also for a directory. Unchanged parent directories of changed
// entries are written too, as overlay copies them up. Both trees are walked
// through directory descriptors opened with O_NOFOLLOW, never by path
// strings: neither a symlink of the parent tree nor a directory swapped for
// a symlink meanwhile leads the walk anywhere else.
func (s *Snapshotter) Diff(ctx context.Context, w io.Writer, key string, opts store.DiffOptions) error {
	dir, info, err := s.st.Active(key)
	if err != nil {
		return err
	}
	d := &differ{ctx: ctx, aw: archive.NewWriter(w, opts.Epoch)}
	cur, err := openDir(filepath.Join(dir, "fs"))
	if err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	defer cur.Close()
	var old *os.File
	if len(info.Lowers) > 0 {
		if old, err = openDir(s.st.FS(info.Lowers[0])); err != nil {
			return fmt.Errorf("diff %q: %w", key, err)
		}
		defer old.Close()
	}
	if err := d.walk(cur, old, ""); err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	return d.aw.Close()
}

// openDir opens a directory of the snapshot store for reading.
func openDir(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

type differ struct {
	ctx context.Context
	aw  *archive.Writer
	// pending holds the unchanged directories above the current position
	// not yet written; any entry below them writes them first.
	pending []pendingDir
}

// pendingDir is an unchanged directory: its layer path and its fsutil.AtPath
// in its parent, whose descriptor stays open while it is pending.
type pendingDir struct{ name, at string }

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	slices.Sort(names)
	return names, err
}

func (d *differ) flush() error {
	for _, p := range d.pending {
		if err := d.aw.Add(p.name, p.at); err != nil {
			return err
		}
	}
	d.pending = d.pending[:0]
	return nil
}

// add writes the entry name of the new directory dir at layer path p.
func (d *differ) add(dir *os.File, name, p string) error {
	if err := d.flush(); err != nil {
		return err
	}
	return d.aw.Add(p, fsutil.AtPath(dir, name))
}

// walk compares the open directory cur of the new tree, at layer path rel,
// with old, the old tree's directory there (nil when the old tree has no
// directory there: everything in cur is new).
func (d *differ) walk(cur, old *os.File, rel string) error {
	newNames, err := fsutil.Names(cur)
	if err != nil {
		return err
	}
	var oldNames []string
	if old != nil {
		if oldNames, err = fsutil.Names(old); err != nil {
			return err
		}
	}
	i, j := 0, 0
	for i < len(oldNames) || j < len(newNames) {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		switch {
		case j == len(newNames) || (i < len(oldNames) && oldNames[i] < newNames[j]):
			if err := d.flush(); err != nil {
				return err
			}
			if err := d.aw.AddWhiteout(path.Join(rel, oldNames[i])); err != nil {
				return err
			}
			i++
		case i == len(oldNames) || newNames[j] < oldNames[i]:
			if err := d.added(cur, newNames[j], path.Join(rel, newNames[j])); err != nil {
				return err
			}
			j++
		default:
			if err := d.both(cur, old, newNames[j], path.Join(rel, newNames[j])); err != nil {
				return err
			}
			i, j = i+1, j+1
		}
	}
	return nil
}

// added writes the entry name of cur (layer path p), new in this snapshot,
// and everything below it.
func (d *differ) added(cur *os.File, name, p string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(int(cur.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	if err := d.add(cur, name, p); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	sub, err := fsutil.OpenDirAt(cur, name)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer sub.Close()
	return d.walk(sub, nil, p) // with no old counterpart, everything is added
}

// both handles the entry name present in both cur and old (layer path p).
func (d *differ) both(cur, old *os.File, name, p string) error {
	changed, isDir, oldIsDir, err := d.changed(cur, old, name)
	if err != nil {
		return fmt.Errorf("compare %s: %w", p, err)
	}
	if !isDir {
		if changed {
			return d.add(cur, name, p)
		}
		return nil
	}
	if changed {
		if err := d.add(cur, name, p); err != nil {
			return err
		}
	} else {
		d.pending = append(d.pending, pendingDir{p, fsutil.AtPath(cur, name)})
	}
	sub, err := fsutil.OpenDirAt(cur, name)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer sub.Close()
	var oldSub *os.File
	if oldIsDir {
		if oldSub, err = fsutil.OpenDirAt(old, name); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		defer oldSub.Close()
	}
	err = d.walk(sub, oldSub, p) // a non-directory old entry reads as empty
	if n := len(d.pending); n > 0 && d.pending[n-1].name == p {
		d.pending = d.pending[:n-1] // nothing below changed
	}
	return err
}

// changed compares the entry name of cur and old; isDir reports that the
// new entry is a directory whose children walk must still compare, and
// oldIsDir that the old one is a directory too.
func (d *differ) changed(cur, old *os.File, name string) (changed, isDir, oldIsDir bool, err error) {
	op, np := fsutil.AtPath(old, name), fsutil.AtPath(cur, name)
	var o, n unix.Stat_t
	if err := unix.Fstatat(int(old.Fd()), name, &o, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, false, false, err
	}
	if err := unix.Fstatat(int(cur.Fd()), name, &n, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, false, false, err
	}
	typ := n.Mode & unix.S_IFMT
	isDir = typ == unix.S_IFDIR
	if o.Mode&unix.S_IFMT != typ {
		// Replaced: write the new entry; a new directory is all new.
		return true, isDir, false, nil
	}
	oldIsDir = isDir
	if o.Mode != n.Mode || o.Uid != n.Uid || o.Gid != n.Gid || o.Mtim != n.Mtim || o.Rdev != n.Rdev {
		return true, isDir, oldIsDir, nil
	}
	switch typ {
	case unix.S_IFREG:
		if o.Size != n.Size {
			return true, false, false, nil
		}
	case unix.S_IFLNK:
		ot, err1 := os.Readlink(op)
		nt, err2 := os.Readlink(np)
		if err := errors.Join(err1, err2); err != nil {
			return false, false, false, err
		}
		if ot != nt {
			return true, false, false, nil
		}
	}
	ox, err1 := fsutil.Lxattrs(op)
	nx, err2 := fsutil.Lxattrs(np)
	if err := errors.Join(err1, err2); err != nil {
		return false, false, false, err
	}
	if !maps.EqualFunc(ox, nx, bytes.Equal) {
		return true, isDir, oldIsDir, nil
	}
	if typ == unix.S_IFREG && n.Mtim.Nsec == 0 && n.Size > 0 {
		same, err := sameContent(op, np)
		return !same, false, false, err
	}
	return false, isDir, oldIsDir, nil
}

// sameContent compares two regular files, opened without following a
// symlink.
func sameContent(a, b string) (bool, error) {
	fa, err := os.OpenFile(a, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.OpenFile(b, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra == io.EOF || erra == io.ErrUnexpectedEOF {
			return errb == erra, nil
		}
		if erra != nil {
			return false, erra
		}
		if errb != nil {
			return false, errb
		}
	}
}

// List returns every committed snapshot.
func (s *Snapshotter) List(ctx context.Context) ([]store.Listed, error) {
	return s.st.Listed()
}

// Delete removes the committed snapshot name; it refuses while another
// snapshot is built on it, and a missing name is not an error.
func (s *Snapshotter) Delete(ctx context.Context, name string) error {
	return s.st.Delete(name)
}

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
// entries are written too, as overlay copies them up.
func (s *Snapshotter) Diff(ctx context.Context, w io.Writer, key string, opts store.DiffOptions) error {
	dir, info, err := s.st.Active(key)
	if err != nil {
		return err
	}
	d := &differ{ctx: ctx, new: filepath.Join(dir, "fs"), aw: archive.NewWriter(w, opts.Epoch)}
	if len(info.Lowers) > 0 {
		d.old = s.st.FS(info.Lowers[0])
	}
	if err := d.walk(""); err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	return d.aw.Close()
}

type differ struct {
	ctx      context.Context
	old, new string // old is "" for an empty parent
	aw       *archive.Writer
	// pending holds the unchanged directories above the current position
	// not yet written; any entry below them writes them first.
	pending []string
}

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
		if err := d.aw.Add(p, filepath.Join(d.new, p)); err != nil {
			return err
		}
	}
	d.pending = d.pending[:0]
	return nil
}

func (d *differ) add(p string) error {
	if err := d.flush(); err != nil {
		return err
	}
	return d.aw.Add(p, filepath.Join(d.new, p))
}

// walk compares the directory rel, present in the new tree, with the old
// tree's rel ("" old dir or a non-directory reads as empty).
func (d *differ) walk(rel string) error {
	newNames, err := readNames(filepath.Join(d.new, rel))
	if err != nil {
		return err
	}
	var oldNames []string
	if d.old != "" {
		// Never through a symlink of the old tree: the parent's "a -> /"
		// replaced by a directory "a" with "a/etc" must not compare
		// a/etc with the host's /etc (its names would become whiteouts).
		if st, err := fsutil.LstatBeneath(d.old, rel); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if oldNames, err = readNames(filepath.Join(d.old, rel)); err != nil {
				return err
			}
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
			if err := d.added(path.Join(rel, newNames[j])); err != nil {
				return err
			}
			j++
		default:
			if err := d.both(path.Join(rel, newNames[j])); err != nil {
				return err
			}
			i, j = i+1, j+1
		}
	}
	return nil
}

// added writes p, new in this snapshot, and everything below it.
func (d *differ) added(p string) error {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.new, p), &st); err != nil {
		return err
	}
	if err := d.add(p); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return d.walk(p) // with no old counterpart, everything is added
	}
	return nil
}

// both handles p present in both trees.
func (d *differ) both(p string) error {
	changed, isDir, err := d.changed(p)
	if err != nil {
		return err
	}
	if !isDir {
		if changed {
			return d.add(p)
		}
		return nil
	}
	if changed {
		if err := d.add(p); err != nil {
			return err
		}
	} else {
		d.pending = append(d.pending, p)
	}
	err = d.walk(p)
	if n := len(d.pending); n > 0 && d.pending[n-1] == p {
		d.pending = d.pending[:n-1] // nothing below changed
	}
	return err
}

// changed compares p in both trees; isDir reports that the new p is a
// directory whose children walk must still compare (old p was one too).
func (d *differ) changed(p string) (changed, isDir bool, err error) {
	op, np := filepath.Join(d.old, p), filepath.Join(d.new, p)
	// walk listed p in old directories it reached without a symlink, so
	// op names the old entry itself; LstatBeneath keeps it so.
	o, err := fsutil.LstatBeneath(d.old, p)
	if err != nil {
		return false, false, err
	}
	var n unix.Stat_t
	if err := unix.Lstat(np, &n); err != nil {
		return false, false, err
	}
	typ := n.Mode & unix.S_IFMT
	if o.Mode&unix.S_IFMT != typ {
		// Replaced: write the new entry; a new directory is all new, and
		// walk reads a non-directory old path as an empty directory.
		return true, typ == unix.S_IFDIR, nil
	}
	isDir = typ == unix.S_IFDIR
	if o.Mode != n.Mode || o.Uid != n.Uid || o.Gid != n.Gid || o.Mtim != n.Mtim || o.Rdev != n.Rdev {
		return true, isDir, nil
	}
	switch typ {
	case unix.S_IFREG:
		if o.Size != n.Size {
			return true, false, nil
		}
	case unix.S_IFLNK:
		ot, err1 := os.Readlink(op)
		nt, err2 := os.Readlink(np)
		if err := errors.Join(err1, err2); err != nil {
			return false, false, err
		}
		if ot != nt {
			return true, false, nil
		}
	}
	ox, err1 := fsutil.Lxattrs(op)
	nx, err2 := fsutil.Lxattrs(np)
	if err := errors.Join(err1, err2); err != nil {
		return false, false, err
	}
	if !maps.EqualFunc(ox, nx, bytes.Equal) {
		return true, isDir, nil
	}
	if typ == unix.S_IFREG && n.Mtim.Nsec == 0 && n.Size > 0 {
		same, err := sameContent(op, np)
		return !same, false, err
	}
	return false, isDir, nil
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
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

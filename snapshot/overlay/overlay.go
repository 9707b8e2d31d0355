// Package overlay is the overlayfs snapshotter: each committed snapshot
// keeps only its own layer, as an overlay upper directory, and an active
// snapshot is an overlay mount of a fresh upper directory on its ancestors'
// layers. Diff reads only the upper directory, so its cost follows the size
// of the change, not of the tree.
//
// Layers are mounted with index=off,redirect_dir=off,metacopy=off when the
// kernel accepts them, so every upper directory is a plain tree plus
// whiteouts (0/0 character devices) and opaque directories
// (trusted.overlay.opaque=y) that maps one to one onto an OCI layer. In a
// user namespace (rootless builder) the layers are mounted with userxattr
// instead, and opaque directories carry user.overlay.opaque=y.
package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"builder/snapshot/archive"
	"builder/snapshot/internal/fsutil"
	"builder/snapshot/internal/store"
	"builder/snapshot/mount"
)

// Snapshotter implements snapshot.Snapshotter on overlayfs. It is safe for
// concurrent use by goroutines and by processes sharing one root.
type Snapshotter struct {
	st    *store.Store
	extra []string // overlay options the kernel accepted in the probe
	xattr string   // prefix of overlayfs's own xattrs: "trusted.overlay." or "user.overlay."
}

// stableOptions keep an upper directory a faithful layer diff.
var stableOptions = []string{"index=off", "redirect_dir=off", "metacopy=off"}

// userOptions are stableOptions for a user namespace, where overlayfs needs
// userxattr (its bookkeeping in user.overlay.* xattrs) and refuses
// redirect_dir=off, which may still follow redirects through trusted
// xattrs; nofollow neither makes nor follows them.
var userOptions = []string{"userxattr", "index=off", "redirect_dir=nofollow", "metacopy=off"}

// New opens (creating if needed) an overlay snapshot root at root, cleans up
// what killed processes left there, and probes with a real mount in a
// private namespace that overlayfs works on root's file system (once per
// boot, file system and user namespace: see ProbeFile). It returns
// an error when it does not; callers may then fall back to the naive
// snapshotter.
func New(root string) (*Snapshotter, error) {
	st, err := store.Open(root)
	if err != nil {
		return nil, err
	}
	extra, xattr, err := cachedProbe(root, st)
	if err != nil {
		return nil, fmt.Errorf("overlayfs unusable on %s: %w", root, err)
	}
	return &Snapshotter{st: st, extra: extra, xattr: xattr}, nil
}

// probe mounts a two-layer overlay in a private namespace, writes a file,
// deletes a lower one (which needs a whiteout) and replaces a lower
// directory by an empty one (which needs an opaque xattr, which a user
// namespace can only set where the file system has user xattrs: tmpfs
// before Linux 6.6 has not), and returns the stable
// options if the kernel took them, or none (in a user namespace: userxattr
// only) if it only works without them, and the prefix of overlayfs's own
// xattrs.
func probe(st *store.Store) ([]string, string, error) {
	stable, fallback, xattr := stableOptions, []string(nil), "trusted.overlay."
	if fsutil.InUserNamespace() {
		stable, fallback, xattr = userOptions, []string{"userxattr"}, "user.overlay."
	}
	accepted, err := probeWith(st, stable, fallback, xattr)
	return accepted, xattr, err
}

// probeWith is probe with the options to try first and those to fall back
// to where the kernel refuses them with EINVAL, and the xattr prefix
// overlayfs will use; it returns the options used.
func probeWith(st *store.Store, stable, fallback []string, xattr string) ([]string, error) {
	dir, err := st.NewProbeDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, d := range []string{"l1", "l2", "upper", "work", "merged"} {
		if err := os.Mkdir(p(d), 0o755); err != nil {
			return nil, fmt.Errorf("probe: %w", err)
		}
	}
	if err := os.WriteFile(p("l2/f"), nil, 0o644); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	if err := os.MkdirAll(p("l2/d/e"), 0o755); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	var accepted []string
	err = mount.InNamespace(context.Background(), func() error {
		base := []string{"lowerdir=" + p("l1") + ":" + p("l2"), "upperdir=" + p("upper"), "workdir=" + p("work")}
		err := mount.Mount{Type: "overlay", Source: "overlay", Options: append(slices.Clone(stable), base...)}.To(p("merged"), false)
		if errors.Is(err, unix.EINVAL) {
			accepted = fallback
			err = mount.Mount{Type: "overlay", Source: "overlay", Options: append(slices.Clone(fallback), base...)}.To(p("merged"), false)
		} else {
			accepted = stable
		}
		if err != nil {
			return err
		}
		defer mount.Unmount(p("merged")) //nolint:errcheck // the thread's namespace dies with it
		if err := os.WriteFile(p("merged/new"), []byte("x"), 0o644); err != nil {
			return err
		}
		if err := os.RemoveAll(p("merged/d")); err != nil {
			return err
		}
		if err := os.Mkdir(p("merged/d"), 0o755); err != nil {
			return err
		}
		return os.Remove(p("merged/f"))
	})
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	var stt unix.Stat_t
	if err := unix.Lstat(p("upper/f"), &stt); err != nil || !isWhiteout(&stt) {
		return nil, errors.New("probe: deleting a lower file made no whiteout")
	}
	if v, err := fsutil.Lgetxattr(p("upper/d"), xattr+"opaque"); err != nil || string(v) != "y" {
		return nil, errors.Join(errors.New("probe: replacing a lower directory made no opaque directory"), err)
	}
	return accepted, nil
}

// Options returns the overlay options besides the directories that this
// kernel accepted (empty if it refused index=off,redirect_dir=off,
// metacopy=off; in a user namespace userxattr,index=off,
// redirect_dir=nofollow,metacopy=off or userxattr alone).
func (s *Snapshotter) Options() []string { return slices.Clone(s.extra) }

// Prepare creates the active snapshot key on parent ("" for an empty
// tree). Its mounts are a bind mount of an empty directory without a
// parent, else one overlay mount on the parent chain.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string) ([]mount.Mount, error) {
	dir, info, err := s.st.Prepare(ctx, key, parent, func(dir, _ string) error {
		return os.Mkdir(filepath.Join(dir, "work"), 0o700)
	})
	if err != nil {
		return nil, err
	}
	upper := filepath.Join(dir, "fs")
	if len(info.Lowers) == 0 {
		return []mount.Mount{{Type: "bind", Source: upper, Options: []string{"rbind", "rw"}}}, nil
	}
	opts := append(s.Options(), "lowerdir="+s.lowerdirs(info.Lowers), "upperdir="+upper, "workdir="+filepath.Join(dir, "work"))
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
}

func (s *Snapshotter) lowerdirs(ids []string) string {
	dirs := make([]string, len(ids))
	for i, id := range ids {
		dirs[i] = s.st.FS(id)
	}
	return strings.Join(dirs, ":")
}

// View returns read-only mounts of the committed snapshot name: a read-only
// bind mount for a single layer, else an overlay of lower directories only.
func (s *Snapshotter) View(ctx context.Context, name string) ([]mount.Mount, error) {
	id, info, err := s.st.Committed(name)
	if err != nil {
		return nil, err
	}
	if len(info.Lowers) == 0 {
		return []mount.Mount{{Type: "bind", Source: s.st.FS(id), Options: []string{"rbind", "ro"}}}, nil
	}
	opts := append(s.Options(), "lowerdir="+s.lowerdirs(append([]string{id}, info.Lowers...)), "ro")
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
}

// Diff writes the change in the active snapshot key as a layer tar, reading
// only its upper directory. Overlay whiteouts become ".wh." entries and
// opaque directories get a ".wh..wh..opq" entry, each only where the layers
// below hold something to hide. A redirected directory or a real file
// named ".wh.*" in the upper directory is an error. The upper directory is
// walked through directory descriptors, never by a path string, so a
// directory swapped for a symlink meanwhile is an error, not followed.
func (s *Snapshotter) Diff(ctx context.Context, w io.Writer, key string, opts store.DiffOptions) error {
	dir, info, err := s.st.Active(key)
	if err != nil {
		return err
	}
	d := &differ{ctx: ctx, aw: archive.NewWriter(w, opts.Epoch), xattr: s.xattr}
	for _, id := range info.Lowers {
		d.lowers = append(d.lowers, s.st.FS(id))
	}
	upper, err := os.OpenFile(filepath.Join(dir, "fs"), os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	defer upper.Close()
	if err := d.walk(upper, "", false); err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	return d.aw.Close()
}

type differ struct {
	ctx    context.Context
	lowers []string
	aw     *archive.Writer
	xattr  string // prefix of overlayfs's own xattrs
}

func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// walk writes the children of the open upper directory dir, at rel in the
// layer. hidden says rel or an ancestor is opaque, so nothing below it
// exists in the lower layers.
func (d *differ) walk(dir *os.File, rel string, hidden bool) error {
	names, err := fsutil.Names(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		p := path.Join(rel, n)
		full := fsutil.AtPath(dir, n)
		var st unix.Stat_t
		if err := unix.Fstatat(int(dir.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if isWhiteout(&st) {
			if !hidden && d.lowerExists(p, false) {
				if err := d.aw.AddWhiteout(p); err != nil {
					return err
				}
			}
			continue
		}
		if strings.HasPrefix(n, archive.WhiteoutPrefix) {
			return fmt.Errorf("%s: a file named like a whiteout cannot be stored in a layer", p)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := d.aw.Add(p, full); err != nil {
				return err
			}
			continue
		}
		if v, err := fsutil.Lgetxattr(full, d.xattr+"redirect"); err != nil || v != nil {
			return errors.Join(fmt.Errorf("%s: redirected directories are not supported", p), err)
		}
		if err := d.aw.Add(p, full); err != nil {
			return err
		}
		v, err := fsutil.Lgetxattr(full, d.xattr+"opaque")
		if err != nil {
			return err
		}
		opaque := string(v) == "y"
		if opaque && !hidden && d.lowerExists(p, true) {
			if err := d.aw.AddOpaque(p); err != nil {
				return err
			}
		}
		sub, err := fsutil.OpenDirAt(dir, n)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		err = d.walk(sub, p, hidden || opaque)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// lowerExists reports whether p exists (as a directory, if dir is set) in
// the merged view of the lower layers, reading them the way overlayfs does:
// the first layer holding p decides, unless a whiteout, a non-directory or
// an opaque directory on the way hides the deeper layers. A layer's
// symlinks are never followed (a lower "a -> /" must not make "a/x" exist
// because the host has /x): p is looked up beneath each layer with
// fsutil.LstatBeneath.
func (d *differ) lowerExists(p string, dir bool) bool {
	for _, l := range d.lowers {
		if st, err := fsutil.LstatBeneath(l, p); err == nil {
			if isWhiteout(&st) {
				return false
			}
			return !dir || st.Mode&unix.S_IFMT == unix.S_IFDIR
		}
		if d.hides(l, p) {
			return false
		}
	}
	return false
}

// hides reports whether layer l hides p of deeper layers by an ancestor of
// p that is a whiteout, a non-directory or an opaque directory.
func (d *differ) hides(l, p string) bool {
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		rel := path.Join(parts[:i]...)
		st, err := fsutil.LstatBeneath(l, rel)
		if err != nil {
			return false
		}
		a := filepath.Join(l, rel) // its ancestors are directories: checked above
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return true
		}
		if v, _ := fsutil.Lgetxattr(a, d.xattr+"opaque"); string(v) == "y" {
			return true
		}
	}
	return false
}

// Commit turns the active snapshot key into the committed snapshot name,
// dropping the work directory and renaming the rest into place in one step.
// If name exists already, key is removed and nil returned. The snapshot must
// not be mounted.
func (s *Snapshotter) Commit(ctx context.Context, name, key string) error {
	return s.st.Commit(name, key, func(dir string) error {
		return os.RemoveAll(filepath.Join(dir, "work"))
	})
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

// List returns every committed snapshot.
func (s *Snapshotter) List(ctx context.Context) ([]store.Listed, error) {
	return s.st.Listed()
}

// Delete removes the committed snapshot name; it refuses while another
// snapshot is built on it, and a missing name is not an error.
func (s *Snapshotter) Delete(ctx context.Context, name string) error {
	return s.st.Delete(name)
}

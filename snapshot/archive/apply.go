// Package archive reads and writes OCI image layer tars.
//
// Apply extracts a layer into a directory (usually the merged view of a
// mounted snapshot) without ever touching anything outside it, whatever the
// tar holds. Writer produces layers with deterministic headers, so the same
// change always gives the same bytes and therefore the same DiffID.
//
// apply.go is longer than our usual file (~580 lines) on purpose: it is
// the one place where untrusted tar entries touch the disk, and every check
// an entry goes through (name, type, link target, whiteout, owner, mode)
// reads top to bottom in it.
package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"builder/snapshot/internal/fsutil"
)

// Apply extracts the uncompressed OCI layer tar r into the directory root
// and returns the number of bytes it read from r, which it reads to the end.
//
// Entries are regular files, directories, symlinks, hard links, devices and
// fifos with their mode (setuid included), owner, mtime and xattrs (PAX
// SCHILY.xattr records; security.* attributes the kernel refuses are
// skipped, overlayfs-private ones are never set). ".wh.NAME" removes NAME
// and ".wh..wh..opq" removes every child of its directory that this layer
// did not write; through an overlay mount the kernel turns those removals
// into overlay whiteouts. An existing directory is kept and gets the entry's
// metadata; any other existing file is replaced.
//
// Every path, hard-link target included, is resolved inside root as if
// root were "/" (absolute symlinks and ".." stop at root), and the last
// component is never followed. Names that climb out of root after cleaning,
// hard links that do, and whiteouts of root itself are errors. Apply needs
// root privileges for ownership, devices and trusted.* xattrs. On error the
// directory holds a partly applied layer.
// typeRegA is the type flag '\x00' of a regular file in pre-POSIX tars,
// which old tools still write (archive/tar deprecates its name, not the
// format).
const typeRegA = '\x00'

func Apply(root string, r io.Reader) (int64, error) {
	return ApplyWith(root, r, Options{})
}

// Options tune ApplyWith.
type Options struct {
	// OnDeviceDenied, when set, makes a character or block device entry
	// that mknod refuses with EPERM (as it always does in a user
	// namespace) a skipped entry reported through it with its clean path,
	// instead of an error.
	OnDeviceDenied func(name string)
}

// ApplyWith is Apply with options.
func ApplyWith(root string, r io.Reader, opts Options) (int64, error) {
	cr := &countingReader{r: r}
	a, err := newApplier(root)
	if err != nil {
		return 0, err
	}
	a.opts = opts
	defer a.close()
	tr := tar.NewReader(cr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return cr.n, fmt.Errorf("read layer: %w", err)
		}
		if err := a.entry(h, tr); err != nil {
			return cr.n, fmt.Errorf("apply %q: %w", h.Name, err)
		}
	}
	if err := a.finish(); err != nil {
		return cr.n, err
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return cr.n, fmt.Errorf("read layer: %w", err)
	}
	return cr.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type dirTime struct {
	name         string
	atime, mtime time.Time
}

type applier struct {
	root *os.File // O_PATH handle of root
	opts Options
	// seen holds every path this layer wrote (and their parents), for
	// opaque whiteouts.
	seen map[string]struct{}
	dirs []dirTime // directory times, set last
	// One cached parent handle: most entries share their predecessor's
	// directory. Any removal drops it, as it may have removed the directory.
	cacheName string
	cache     *os.File
}

func newApplier(root string) (*applier, error) {
	f, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open layer root: %w", err)
	}
	return &applier{root: f, seen: map[string]struct{}{}}, nil
}

func (a *applier) close() {
	a.dropCache()
	a.root.Close()
}

func (a *applier) dropCache() {
	if a.cache != nil {
		a.cache.Close()
		a.cache, a.cacheName = nil, ""
	}
}

// cleanName turns a tar path into a clean path relative to the root ("."
// for the root itself), refusing one that climbs out.
func cleanName(name string) (string, error) {
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("path %q escapes the layer root", name)
	}
	c = strings.TrimLeft(c, "/")
	if c == "" {
		c = "."
	}
	return c, nil
}

// split returns the directory ("." for the root) and last component of a
// clean relative path.
func split(c string) (string, string) {
	dir, base := path.Split(c)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	return dir, base
}

// parent returns an O_PATH handle of dir inside root, creating missing
// directories (mode 0755) when create is set.
func (a *applier) parent(dir string, create bool) (*os.File, error) {
	if a.cache != nil && a.cacheName == dir {
		return a.cache, nil
	}
	var f *os.File
	var err error
	if create {
		f, err = pathrs.MkdirAllHandle(a.root, dir, 0o755)
	} else {
		f, err = pathrs.OpenatInRoot(a.root, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	a.dropCache()
	a.cache, a.cacheName = f, dir
	return f, nil
}

func (a *applier) markSeen(c string) {
	for c != "." {
		if _, ok := a.seen[c]; ok {
			return
		}
		a.seen[c] = struct{}{}
		c, _ = split(c)
	}
}

func (a *applier) entry(h *tar.Header, r io.Reader) error {
	switch h.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeReg, typeRegA, tar.TypeDir, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return fmt.Errorf("unsupported tar entry type %q", h.Typeflag)
	}
	c, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	dir, base := split(c)
	if c == "." {
		if h.Typeflag != tar.TypeDir {
			return errors.New("layer root must be a directory")
		}
		return a.rootMeta(h)
	}
	if strings.HasPrefix(base, WhiteoutPrefix) {
		return a.whiteout(dir, base)
	}
	if h.Typeflag == tar.TypeChar && h.Devmajor == 0 && h.Devminor == 0 {
		return errors.New("character device 0/0 is reserved for overlay whiteouts")
	}
	a.markSeen(c)
	p, err := a.parent(dir, true)
	if err != nil {
		return err
	}
	pfd := int(p.Fd())
	isDir := h.Typeflag == tar.TypeDir

	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && isDir && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		// Keep the directory; only its metadata changes.
	case err == nil:
		if h.Typeflag == tar.TypeLink {
			same, lerr := a.sameAsLinkTarget(h.Linkname, &st)
			if lerr != nil {
				return lerr
			}
			if same {
				return nil
			}
		}
		if err := removeAt(pfd, base); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			// The removal may have taken cached descendants with it.
			a.dropCache()
			if p, err = a.parent(dir, true); err != nil {
				return err
			}
			pfd = int(p.Fd())
		}
		fallthrough
	case errors.Is(err, unix.ENOENT):
		if err := a.create(pfd, base, h, r); err != nil {
			if errors.Is(err, errDeviceDenied) {
				a.opts.OnDeviceDenied(c)
				return nil
			}
			return err
		}
	default:
		return fmt.Errorf("stat: %w", err)
	}
	if h.Typeflag == tar.TypeLink {
		return nil // the metadata belongs to the link target
	}
	return a.meta(pfd, base, c, h)
}

func (a *applier) create(pfd int, base string, h *tar.Header, r io.Reader) error {
	perm := uint32(h.Mode & 0o7777)
	switch h.Typeflag {
	case tar.TypeReg, typeRegA:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("create file: %w", err)
		}
		f := os.NewFile(uintptr(fd), base)
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write file: %w", err)
		}
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(h.Linkname, pfd, base); err != nil {
			return fmt.Errorf("create symlink: %w", err)
		}
	case tar.TypeLink:
		lc, err := cleanName(h.Linkname)
		if err != nil {
			return fmt.Errorf("hard link: %w", err)
		}
		if lc == "." {
			return errors.New("hard link to the layer root")
		}
		tdir, tbase := split(lc)
		t, err := pathrs.OpenatInRoot(a.root, tdir)
		if err != nil {
			return fmt.Errorf("resolve hard link target: %w", err)
		}
		defer t.Close()
		if err := unix.Linkat(int(t.Fd()), tbase, pfd, base, 0); err != nil {
			return fmt.Errorf("create hard link to %s: %w", lc, err)
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := perm | unix.S_IFIFO
		if h.Typeflag == tar.TypeChar {
			mode = perm | unix.S_IFCHR
		} else if h.Typeflag == tar.TypeBlock {
			mode = perm | unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		if err := unix.Mknodat(pfd, base, mode, int(dev)); err != nil {
			if errors.Is(err, unix.EPERM) && h.Typeflag != tar.TypeFifo {
				if a.opts.OnDeviceDenied != nil {
					return errDeviceDenied
				}
				if fsutil.InUserNamespace() {
					return fmt.Errorf("create device: a user namespace (rootless builder) cannot create devices: %w", err)
				}
			}
			return fmt.Errorf("create device: %w", err)
		}
	}
	return nil
}

// errDeviceDenied is create's answer for a device mknod refused when
// Options.OnDeviceDenied is set.
var errDeviceDenied = errors.New("device node not permitted")

// chownError wraps the error of chown to h's owner, explaining EINVAL: in a
// user namespace (rootless builder) an id outside the mapped range cannot
// be stored.
func chownError(h *tar.Header, err error) error {
	if errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("chown to %d:%d: the id is not mapped in this user namespace "+
			"(rootless: the subordinate range in /etc/subuid or /etc/subgid is too small): %w", h.Uid, h.Gid, err)
	}
	return fmt.Errorf("chown: %w", err)
}

// sameAsLinkTarget reports whether st is the file the hard link name points
// at, so re-linking would be a no-op.
func (a *applier) sameAsLinkTarget(name string, st *unix.Stat_t) (bool, error) {
	lc, err := cleanName(name)
	if err != nil {
		return false, fmt.Errorf("hard link: %w", err)
	}
	tdir, tbase := split(lc)
	t, err := pathrs.OpenatInRoot(a.root, tdir)
	if err != nil {
		return false, nil
	}
	defer t.Close()
	var ts unix.Stat_t
	if err := unix.Fstatat(int(t.Fd()), tbase, &ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, nil
	}
	return ts.Dev == st.Dev && ts.Ino == st.Ino, nil
}

// meta sets owner, mode, xattrs and times of the entry base in pfd.
// Directory times wait until the end, as later entries change them.
func (a *applier) meta(pfd int, base, c string, h *tar.Header) error {
	if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return chownError(h, err)
	}
	// chown clears setuid bits, so chmod comes after it; xattrs come last
	// because chown also drops security.capability.
	if h.Typeflag != tar.TypeSymlink {
		if err := chmodNoFollow(pfd, base, uint32(h.Mode&0o7777)); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if err := setXattrs("/proc/self/fd/"+strconv.Itoa(pfd)+"/"+base, false, h); err != nil {
		return err
	}
	at := h.AccessTime
	if at.IsZero() {
		at = h.ModTime
	}
	if h.Typeflag == tar.TypeDir {
		a.dirs = append(a.dirs, dirTime{c, at, h.ModTime})
		return nil
	}
	return setTimes(pfd, base, at, h.ModTime)
}

// chmodNoFollow sets the permission bits of base in pfd without following
// a symlink: fchmodat has no working AT_SYMLINK_NOFOLLOW before Linux 6.6,
// so base is opened O_PATH|O_NOFOLLOW and the mode is set on that inode
// through its /proc/self/fd link. A symlink found there is an error.
func chmodNoFollow(pfd int, base string, mode uint32) error {
	fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return fmt.Errorf("%s is a symlink", base)
	}
	return unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
}

// setTimes sets the times of base in pfd, never following a symlink in
// base, except for the root, which is passed as a /proc/self/fd path.
func setTimes(pfd int, base string, at, mt time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	flags := unix.AT_SYMLINK_NOFOLLOW
	if pfd == unix.AT_FDCWD {
		flags = 0
	}
	if err := unix.UtimesNanoAt(pfd, base, ts, flags); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// setXattrs sets the SCHILY.xattr records of h on p, a /proc/self/fd path
// whose last component is followed only if follow is set.
func setXattrs(p string, follow bool, h *tar.Header) error {
	set := unix.Lsetxattr
	if follow {
		set = unix.Setxattr
	}
	for k, v := range h.PAXRecords {
		key, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || strings.HasPrefix(key, "trusted.overlay.") || strings.HasPrefix(key, "user.overlay.") {
			continue
		}
		err := set(p, key, []byte(v), 0)
		if err != nil && strings.HasPrefix(key, "security.") &&
			(errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES)) {
			continue
		}
		if err != nil {
			return fmt.Errorf("set xattr %s: %w", key, err)
		}
	}
	return nil
}

func (a *applier) rootMeta(h *tar.Header) error {
	a.dropCache()
	fd := int(a.root.Fd())
	if err := unix.Fchownat(fd, "", h.Uid, h.Gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("root: %w", chownError(h, err))
	}
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), uint32(h.Mode&0o7777)); err != nil {
		return fmt.Errorf("chmod root: %w", err)
	}
	if err := setXattrs("/proc/self/fd/"+strconv.Itoa(fd), true, h); err != nil {
		return err
	}
	at := h.AccessTime
	if at.IsZero() {
		at = h.ModTime
	}
	a.dirs = append(a.dirs, dirTime{".", at, h.ModTime})
	return nil
}

// whiteout applies the whiteout entry base in dir.
func (a *applier) whiteout(dir, base string) error {
	opaque := base == OpaqueWhiteout
	target := strings.TrimPrefix(base, WhiteoutPrefix)
	switch {
	case opaque:
	case strings.HasPrefix(base, WhiteoutPrefix+WhiteoutPrefix):
		return nil // reserved (AUFS hard-link store and the like)
	case target == "" || target == "." || target == ".." || strings.Contains(target, "/"):
		return fmt.Errorf("whiteout %q names no removable entry", base)
	}
	p, err := a.parent(dir, false)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil // nothing there to remove
	}
	if err != nil {
		return err
	}
	pfd := int(p.Fd())
	if !opaque {
		err := removeAt(pfd, target)
		a.dropCache()
		return err
	}
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	a.dropCache()
	for _, n := range names {
		if _, ok := a.seen[path.Join(dir, n)]; ok {
			continue
		}
		if err := removeAt(fd, n); err != nil {
			return err
		}
	}
	return nil
}

// removeAt removes name in dirfd and, for a directory, everything below it,
// never following a symlink. A missing name is not an error.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	d := os.NewFile(uintptr(fd), name)
	names, err := d.Readdirnames(-1)
	if err != nil {
		d.Close()
		return fmt.Errorf("list %s: %w", name, err)
	}
	for _, n := range names {
		if err := removeAt(fd, n); err != nil {
			d.Close()
			return err
		}
	}
	d.Close()
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// finish sets the directory times, deepest last-written first.
func (a *applier) finish() error {
	a.dropCache()
	for i := len(a.dirs) - 1; i >= 0; i-- {
		d := a.dirs[i]
		if d.name == "." {
			if err := setTimes(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(a.root.Fd())), d.atime, d.mtime); err != nil {
				return err
			}
			continue
		}
		dir, base := split(d.name)
		p, err := pathrs.OpenatInRoot(a.root, dir)
		if err != nil {
			continue // removed by a later entry
		}
		err = setTimes(int(p.Fd()), base, d.atime, d.mtime)
		p.Close()
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}

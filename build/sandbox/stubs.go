package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// stubs tracks the mountpoints the init creates in the root filesystem so
// that it can remove them after the run: a RUN that changes nothing must
// leave the snapshot unchanged. Paths are kept relative to the root
// ("/etc"), as resolved when they were created, and every one is resolved
// again inside the root by file descriptor when used (see openInRoot):
// root is the path of the root only to open it, the host path before
// pivot_root and "/" after it.
type stubs struct {
	root    string
	rootFD  int             // the root directory (O_PATH), or -1 until opened
	upper   string          // overlay upper dir on the host, or ""
	upperFD int             // upper opened (O_PATH), or -1
	created []string        // paths created, in creation order
	isStub  map[string]bool // the set of created
	times   []dirTimes      // times of existing directories we wrote into
	seen    map[string]bool // directories already noted in times/copied
	copied  []copiedUp
}

// dirTimes holds the times of a directory before a stub was created in it.
type dirTimes struct {
	path         string
	atime, mtime unix.Timespec
}

func newStubs(root, upper string) *stubs {
	return &stubs{root: root, rootFD: -1, upper: upper, upperFD: -1, isStub: map[string]bool{}, seen: map[string]bool{}}
}

// openRoot returns the fd of the root directory, opening it the first
// time: after the root filesystem is mounted and before anything is
// mounted on it. The fd stays valid across pivot_root and chroot.
func (s *stubs) openRoot() (int, error) {
	if s.rootFD >= 0 {
		return s.rootFD, nil
	}
	fd, err := unix.Open(s.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open root directory: %w", err)
	}
	s.rootFD = fd
	return fd, nil
}

// open opens the root-relative path p inside the root, as openInRoot does.
func (s *stubs) open(p string, flags int) (int, error) {
	root, err := s.openRoot()
	if err != nil {
		return -1, err
	}
	return openInRoot(root, p, flags)
}

// maxSymlinks bounds the symlinks followed in resolving one mountpoint,
// as the kernel bounds a lookup.
const maxSymlinks = 40

// ensure makes the root-relative path p exist, as a directory when dir is
// true or as an empty file otherwise, and returns it opened (O_PATH) for
// mounting on, with its resolved root-relative path. It walks p one
// component at a time on file descriptors, following symlinks inside the
// root (absolute ones relative to it, ".." stopping at it) and refusing
// links in /proc. Every component it creates is recorded for removal by
// cleanup; existing components are left alone. p must not resolve to the
// root itself.
func (s *stubs) ensure(p string, dir bool) (*os.File, string, error) {
	fail := func(err error) (*os.File, string, error) {
		return nil, "", fmt.Errorf("create mountpoint %s: %w", p, err)
	}
	root, err := s.openRoot()
	if err != nil {
		return fail(err)
	}
	cur, err := unix.Openat(root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if cur >= 0 {
			unix.Close(cur)
		}
	}()
	rel := "/"
	todo := strings.Split(p, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			rel = path.Dir(rel)
			fd, err := openInRoot(root, rel, unix.O_PATH|unix.O_DIRECTORY)
			if err != nil {
				return fail(err)
			}
			unix.Close(cur)
			cur = fd
			continue
		}
		last := !slices.ContainsFunc(todo, func(c string) bool { return c != "" && c != "." })
		fd, err := s.step(cur, rel, c, last && !dir)
		if err != nil {
			return fail(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return fail(err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			target, err := readLink(fd)
			unix.Close(fd)
			if err != nil {
				return fail(fmt.Errorf("%s: %w", path.Join(rel, c), err))
			}
			if links++; links > maxSymlinks {
				return fail(unix.ELOOP)
			}
			if path.IsAbs(target) {
				rel = "/"
				fd, err := unix.Openat(root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					return fail(err)
				}
				unix.Close(cur)
				cur = fd
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		unix.Close(cur)
		cur, rel = fd, path.Join(rel, c)
		if !last && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fail(fmt.Errorf("%s is not a directory", rel))
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(cur, &st); err != nil {
		return fail(err)
	}
	switch isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR; {
	case rel == "/":
		return fail(errors.New("resolves to the root directory"))
	case dir && !isDir:
		return fail(fmt.Errorf("%s is not a directory", rel))
	case !dir && isDir:
		return fail(fmt.Errorf("%s is a directory", rel))
	}
	f := os.NewFile(uintptr(cur), rel)
	cur = -1
	return f, rel, nil
}

// step opens the entry name of the directory dirfd (at the root-relative
// rel) without following it, first creating it, as an empty file when
// file is set and as a directory otherwise, when it does not exist.
func (s *stubs) step(dirfd int, rel, name string, file bool) (int, error) {
	const flags = unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	if err := s.noteParent(dirfd, rel); err != nil {
		return -1, err
	}
	if file {
		var f int
		if f, err = unix.Openat(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644); err == nil {
			unix.Close(f)
		}
	} else {
		err = unix.Mkdirat(dirfd, name, 0o755)
	}
	switch {
	case err == nil:
		p := path.Join(rel, name)
		s.created = append(s.created, p)
		s.isStub[p] = true
	case !errors.Is(err, unix.EEXIST): // EEXIST: made meanwhile, and not ours
		return -1, err
	}
	return unix.Openat(dirfd, name, flags, 0)
}

// readLink returns the target of the symlink open (O_PATH|O_NOFOLLOW) as
// fd. It refuses the links of /proc, which are magic links or lead into
// it.
func readLink(fd int) (string, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return "", err
	}
	if sfs.Type == unix.PROC_SUPER_MAGIC {
		return "", errors.New("refusing to follow a link in /proc")
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// noteParent records, before the first stub is created in the existing
// directory dir (open as dirfd), its times (to restore them) and, on
// overlay, which of dir and its ancestors the creation will copy up into
// the upper dir.
func (s *stubs) noteParent(dirfd int, dir string) error {
	if s.isStub[dir] || s.seen[dir] {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return err
	}
	s.times = append(s.times, dirTimes{path: dir, atime: st.Atim, mtime: st.Mtim})
	if s.upper == "" {
		s.seen[dir] = true
		return nil
	}
	for d := dir; d != "/"; d = path.Dir(d) {
		if s.seen[d] {
			break
		}
		s.seen[d] = true
		if s.inUpper(d) {
			break // in the upper dir already, and so are its parents
		}
		// Resolved again by path, d may be gone (a concurrent rename in a
		// shared cache mount): then there is nothing to note.
		fd, err := s.open(d, unix.O_PATH|unix.O_NOFOLLOW)
		if err != nil {
			break
		}
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err != nil {
			break
		}
		s.copied = append(s.copied, copiedUp{
			Path: d, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano(),
		})
	}
	s.seen[dir] = true
	return nil
}

// inUpper reports whether the root-relative path d exists in the overlay
// upper dir, through real directories only.
func (s *stubs) inUpper(d string) bool {
	if s.upperFD < 0 {
		fd, err := unix.Open(s.upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return false
		}
		s.upperFD = fd
	}
	fd, err := unix.Openat2(s.upperFD, strings.TrimLeft(d, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// unmount detaches the mount on the root-relative mountpoint p, which
// must not be a symlink, and whatever is mounted below it. It is best
// effort.
func (s *stubs) unmount(p string) {
	parent, err := s.open(path.Dir(p), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return
	}
	defer unix.Close(parent)
	// umount2 takes no directory fd: look the last component up from the
	// working directory, then go back to the root.
	if unix.Fchdir(parent) != nil {
		return
	}
	_ = unix.Unmount(path.Base(p), unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	_ = unix.Fchdir(s.rootFD)
}

// cleanup removes the stubs that are still empty, newest first, and then
// restores the times of the directories they were created in. The mounts on
// the stubs must be gone. It is best effort: a stub that the command filled
// is kept. Each path is resolved inside the root again, so whatever the
// command or a concurrent build did to them, nothing outside is touched.
func (s *stubs) cleanup() {
	for _, p := range slices.Backward(s.created) {
		parent, err := s.open(path.Dir(p), unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		name := path.Base(p)
		var st unix.Stat_t
		if unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				_ = unix.Unlinkat(parent, name, unix.AT_REMOVEDIR) // fails when not empty: then it is the command's
			case unix.S_IFREG:
				if st.Size == 0 {
					_ = unix.Unlinkat(parent, name, 0)
				}
			}
		}
		unix.Close(parent)
	}
	for _, t := range slices.Backward(s.times) {
		fd, err := s.open(t.path, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		_ = unix.UtimesNanoAt(fd, "", []unix.Timespec{t.atime, t.mtime}, unix.AT_EMPTY_PATH)
		unix.Close(fd)
	}
}

// removeCopiedUp removes from the overlay upper dir the directories in dirs
// that only exist there because a mountpoint was created in them: those
// with the metadata they had before, not opaque, and empty but for other
// such directories. The overlay must be unmounted. Directories that do not
// qualify are left alone. All are checked before any is removed, since a
// removal changes its parent's mtime.
func removeCopiedUp(upper string, dirs []copiedUp) error {
	if upper == "" || len(dirs) == 0 {
		return nil
	}
	dirs = slices.Clone(dirs)
	slices.SortStableFunc(dirs, func(a, b copiedUp) int { return depth(b.Path) - depth(a.Path) })
	removable := map[string]bool{}
	var order []string
	for _, d := range dirs {
		ok, err := removableCopyUp(upper, d, removable)
		if err != nil {
			return fmt.Errorf("clean upper dir %s: %w", d.Path, err)
		}
		if ok {
			removable[path.Clean(d.Path)] = true
			order = append(order, d.Path)
		}
	}
	for _, p := range order {
		if err := unix.Rmdir(filepath.Join(upper, p)); err != nil {
			return fmt.Errorf("clean upper dir %s: %w", p, err)
		}
	}
	return nil
}

// removableCopyUp reports whether the upper dir copy of d can be removed
// without changing the merged tree, given the set of its subdirectories that
// will be removed. Every component of the path must be a real directory: the
// command may have put symlinks in the upper dir.
func removableCopyUp(upper string, d copiedUp, removable map[string]bool) (bool, error) {
	p := upper
	var st unix.Stat_t
	for _, c := range strings.Split(strings.TrimPrefix(path.Clean(d.Path), "/"), "/") {
		p = filepath.Join(p, c)
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return false, nil
			}
			return false, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return false, nil
		}
	}
	if st.Mode != d.Mode || st.Uid != d.UID || st.Gid != d.GID || st.Mtim.Nano() != d.Mtime {
		return false, nil
	}
	buf := make([]byte, 1)
	// A rootless (userxattr) overlay marks opaque directories in user.*.
	for _, key := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if n, err := unix.Lgetxattr(p, key, buf); err == nil && n == 1 && buf[0] == 'y' {
			return false, nil
		}
	}
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return false, err
	}
	for _, n := range names {
		if !removable[path.Join(path.Clean(d.Path), n)] {
			return false, nil
		}
	}
	return true, nil
}

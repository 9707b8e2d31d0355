package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// stubs tracks the mountpoints the init creates in the root filesystem so
// that it can remove them after the run: a RUN that changes nothing must
// leave the snapshot unchanged. Paths are kept relative to the root ("/etc")
// and resolved against root, which is the host path of the root before
// pivot_root and "/" after it.
type stubs struct {
	root    string
	upper   string          // overlay upper dir on the host, or ""
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
	return &stubs{root: root, upper: upper, isStub: map[string]bool{}, seen: map[string]bool{}}
}

// host returns the current path of the root-relative path p.
func (s *stubs) host(p string) string {
	return filepath.Join(s.root, p)
}

// ensure makes the root-relative path p exist, as a directory when dir is
// true or as an empty file otherwise, resolving symlinks inside the root, and
// returns the resolved root-relative path to mount on. Every component it
// creates is recorded for removal by cleanup; existing components are left
// alone.
func (s *stubs) ensure(p string, dir bool) (string, error) {
	full, err := securejoin.SecureJoin(s.root, p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	rel, err := filepath.Rel(s.root, full)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("resolve %s: outside root", p)
	}
	if rel == "." {
		return "/", nil
	}
	comps := strings.Split(rel, "/")
	cur := "/"
	for i, c := range comps {
		next := path.Join(cur, c)
		last := i == len(comps)-1
		fi, err := os.Lstat(s.host(next))
		if err == nil {
			if !last && !fi.IsDir() {
				return "", fmt.Errorf("create mountpoint %s: %s is not a directory", p, next)
			}
			cur = next
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("create mountpoint %s: %w", p, err)
		}
		if err := s.noteParent(cur); err != nil {
			return "", fmt.Errorf("create mountpoint %s: %w", p, err)
		}
		if last && !dir {
			f, err := os.OpenFile(s.host(next), os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o644)
			if err != nil {
				return "", fmt.Errorf("create mountpoint %s: %w", p, err)
			}
			f.Close()
		} else if err := os.Mkdir(s.host(next), 0o755); err != nil {
			return "", fmt.Errorf("create mountpoint %s: %w", p, err)
		}
		s.created = append(s.created, next)
		s.isStub[next] = true
		cur = next
	}
	return "/" + rel, nil
}

// noteParent records, before the first stub is created in the existing
// directory dir, its times (to restore them) and, on overlay, which of dir
// and its ancestors the creation will copy up into the upper dir.
func (s *stubs) noteParent(dir string) error {
	if s.isStub[dir] || s.seen[dir] {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(s.host(dir), &st); err != nil {
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
		if _, err := os.Lstat(filepath.Join(s.upper, d)); err == nil {
			break // in the upper dir already, and so are its parents
		}
		if err := unix.Lstat(s.host(d), &st); err != nil {
			return err
		}
		s.copied = append(s.copied, copiedUp{
			Path: d, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano(),
		})
	}
	s.seen[dir] = true
	return nil
}

// cleanup removes the stubs that are still empty, newest first, and then
// restores the times of the directories they were created in. The mounts on
// the stubs must be gone. It is best effort: a stub that the command filled
// is kept.
func (s *stubs) cleanup() {
	for _, p := range slices.Backward(s.created) {
		h := s.host(p)
		fi, err := os.Lstat(h)
		switch {
		case err != nil:
		case fi.IsDir():
			_ = unix.Rmdir(h) // fails when not empty: then it is the command's
		case fi.Mode().IsRegular() && fi.Size() == 0:
			_ = unix.Unlink(h)
		}
	}
	for _, t := range slices.Backward(s.times) {
		_ = unix.UtimesNanoAt(unix.AT_FDCWD, s.host(t.path), []unix.Timespec{t.atime, t.mtime}, unix.AT_SYMLINK_NOFOLLOW)
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

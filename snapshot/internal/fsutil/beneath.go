package fsutil

import (
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// LstatBeneath stats the clean relative path p ("" or "." for root
// itself) below the directory root without following any symlink on the
// way, the last component included, and without leaving root: the parent of p is opened with openat2
// (RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so a symlink among p's ancestors
// fails with ELOOP instead of leading elsewhere, as overlayfs itself never
// follows a lower layer's symlink when it looks a path up.
func LstatBeneath(root, p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if base == "" {
		base = "."
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rfd)
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	var fd int
	for range 16 {
		if fd, err = unix.Openat2(rfd, dir, &how); err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return st, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	return st, nil
}

package fsutil

import (
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
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

// OpenDirAt opens the directory name in dir for reading, refusing a
// symlink (ELOOP) or anything else that is not a directory (ENOTDIR).
func OpenDirAt(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path.Join(dir.Name(), name), Err: err}
	}
	return os.NewFile(uintptr(fd), path.Join(dir.Name(), name)), nil
}

// AtPath is a path that names the entry name of the open directory dir
// through dir's descriptor ("/proc/self/fd/N/name"), for calls that take a
// path and do not follow its last component (lstat, readlink, lgetxattr,
// open with O_NOFOLLOW). Whatever happens to the path dir was opened by,
// it reaches the entry of that very directory. It is valid while dir is
// open.
func AtPath(dir *os.File, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + name
}

// Names returns the entry names of the open directory dir, sorted.
func Names(dir *os.File) ([]string, error) {
	if _, err := dir.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind %s: %w", dir.Name(), err)
	}
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", dir.Name(), err)
	}
	slices.Sort(names)
	return names, nil
}

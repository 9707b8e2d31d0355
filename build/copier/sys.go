package copier

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// errChanged reports that a path changed type while it was being copied:
// a directory became a symlink, or a file was swapped for another.
var errChanged = errors.New("path changed during copy")

// root is an open directory that every path operation is confined to.
type root struct {
	dir  string   // absolute, clean host path
	file *os.File // O_DIRECTORY handle on dir
}

// openRoot opens dir as a confinement root. The caller closes the result.
func openRoot(dir string) (*root, error) {
	abs, err := absClean(dir)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: abs, Err: err}
	}
	return &root{dir: abs, file: os.NewFile(uintptr(fd), abs)}, nil
}

func (r *root) close() error { return r.file.Close() }

func (r *root) fd() int { return int(r.file.Fd()) }

// resolve follows the symlinks of the slash-separated path p as if r were
// the file system root: absolute links and ".." stop at r. It returns the
// resolved path relative to r, clean and slash separated, "." for r itself.
// Components that do not exist are kept lexically.
func (r *root) resolve(p string) (string, error) {
	full, err := securejoin.SecureJoin(r.dir, p)
	if err != nil {
		return "", err
	}
	rel := strings.TrimPrefix(full, r.dir)
	rel = strings.TrimPrefix(rel, "/")
	if rel == "" {
		return ".", nil
	}
	return rel, nil
}

// openBeneath opens the clean relative path rel below the directory fd
// without following any symlink and without leaving the directory. A
// symlink in the way fails with ELOOP.
func openBeneath(dirfd int, rel string, flags int) (*os.File, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	var fd int
	var err error
	for range 16 {
		fd, err = unix.Openat2(dirfd, rel, &how)
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// fstat returns the stat of an open file.
func fstat(f *os.File) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return st, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return st, nil
}

// lstatAt stats name in the directory dirfd without following a symlink.
func lstatAt(dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// readlinkAt reads the symlink name in the directory dirfd.
func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// openDirAt opens the directory name inside dirfd, refusing symlinks.
func openDirAt(dirfd int, name, display string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: display, Err: err}
	}
	return os.NewFile(uintptr(fd), display), nil
}

// fdPath is the /proc path that names the inode behind an open file, for
// the calls that have no fd-based form with nanosecond precision.
func fdPath(f *os.File) string {
	return "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
}

// xattr is one extended attribute.
type xattr struct {
	name  string
	value []byte
}

// listXattrs reads all extended attributes of an open file, sorted by name.
// File systems without xattr support yield none.
func listXattrs(f *os.File) ([]xattr, error) {
	fd := int(f.Fd())
	var names []byte
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Flistxattr(fd, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs of %s: %w", f.Name(), err)
		}
		names = buf[:n]
		break
	}
	var out []xattr
	for _, name := range strings.Split(string(names), "\x00") {
		if name == "" {
			continue
		}
		val, err := getXattr(fd, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read xattr %s of %s: %w", name, f.Name(), err)
		}
		out = append(out, xattr{name: name, value: val})
	}
	slices.SortFunc(out, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

func getXattr(fd int, name string) ([]byte, error) {
	for size := 256; size <= 1<<20; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Fgetxattr(fd, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.E2BIG
}

// absClean returns dir as an absolute clean path.
func absClean(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("empty root path")
	}
	if !path.IsAbs(dir) {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", dir, err)
		}
		dir = path.Join(wd, dir)
	}
	return path.Clean(dir), nil
}

// fileType names the type bits of a stat mode.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFSOCK:
		return "socket"
	}
	return "unknown"
}

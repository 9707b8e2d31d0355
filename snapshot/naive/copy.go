package naive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"builder/snapshot/internal/fsutil"
)

// copier copies a tree of the snapshot store, which it trusts not to change
// meanwhile; it never follows a symlink in it.
type copier struct {
	ctx   context.Context
	links map[[2]uint64]string // source inode -> first destination path
}

// copyTree copies the contents and metadata of the directory src into the
// existing directory dst.
func (c *copier) copyTree(src, dst string) error {
	if err := c.copyDir(src, dst); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

func (c *copier) copyDir(src, dst string) error {
	names, err := readNames(src)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if err := c.copyEntry(filepath.Join(src, n), filepath.Join(dst, n)); err != nil {
			return err
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return err
	}
	return copyMeta(src, dst, &st)
}

func (c *copier) copyEntry(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdir(dst, 0o700); err != nil {
			return fmt.Errorf("mkdir %s: %w", dst, err)
		}
		return c.copyDir(src, dst)
	case unix.S_IFREG:
		id := [2]uint64{st.Dev, st.Ino}
		if first, ok := c.links[id]; ok {
			if err := unix.Link(first, dst); err != nil {
				return fmt.Errorf("link %s: %w", dst, err)
			}
			return nil
		}
		if st.Nlink > 1 {
			c.links[id] = dst
		}
		if err := copyFile(src, dst); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := unix.Symlink(target, dst); err != nil {
			return fmt.Errorf("symlink %s: %w", dst, err)
		}
	default: // devices, fifos, sockets
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod %s: %w", dst, err)
		}
	}
	return copyMeta(src, dst, &st)
}

func copyFile(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in) // copy_file_range where the kernel can
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// copyMeta gives dst the owner, mode, xattrs and times of src (st).
func copyMeta(src, dst string, st *unix.Stat_t) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", dst, err)
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if !isLink {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", dst, err)
		}
	}
	xs, err := fsutil.Lxattrs(src)
	if err != nil {
		return err
	}
	for k, v := range xs {
		err := unix.Lsetxattr(dst, k, v, 0)
		if err != nil && strings.HasPrefix(k, "security.") && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP)) {
			continue
		}
		if err != nil {
			return fmt.Errorf("set xattr %s on %s: %w", k, dst, err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", dst, err)
	}
	return nil
}

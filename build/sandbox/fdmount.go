package sandbox

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The init resolves every path that build input can influence (mount
// sources inside their roots, mountpoints inside the root filesystem) to a
// file descriptor once, and mounts through descriptors only, with the mount
// API of Linux 5.12 and later: open_tree(2) clones a source as a detached
// mount, fsopen(2), fsconfig(2) and fsmount(2) make a new filesystem as
// one, mount_setattr(2) sets its flags, and move_mount(2) attaches it onto
// the mountpoint's descriptor. No path string is looked up again after it
// was checked, so a concurrent rename cannot redirect a mount.

// errMountAPI explains an ENOSYS from the mount API.
var errMountAPI = errors.New("the sandbox needs Linux 5.12 or later (openat2, open_tree, move_mount, fsopen, mount_setattr)")

// mountAPIErr wraps err with errMountAPI when the kernel lacks the call.
func mountAPIErr(err error) error {
	if errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("%w: %w", errMountAPI, err)
	}
	return err
}

// openInRoot opens p inside the directory dirfd as if dirfd were the root
// directory: ".." stops at it, absolute symlinks are taken relative to it
// and magic links (/proc/PID/fd/N, /proc/PID/root) are refused. flags
// gets O_CLOEXEC added. A rename elsewhere during the lookup makes the
// kernel refuse it with EAGAIN; it is retried a bounded number of times.
func openInRoot(dirfd int, p string, flags int) (int, error) {
	p = strings.TrimLeft(p, "/")
	if p == "" {
		p = "."
	}
	how := &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 64 {
		fd, err := unix.Openat2(dirfd, p, how)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, mountAPIErr(err)
	}
	return -1, fmt.Errorf("open %s: %w (the tree kept changing)", p, unix.EAGAIN)
}

// mountAttr converts mount(2) flags to mount_setattr(2) attributes.
func mountAttr(flags uintptr) unix.MountAttr {
	var attr unix.MountAttr
	for _, f := range []struct {
		ms   uintptr
		attr uint64
	}{
		{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY},
		{unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
		{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV},
		{unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
		{unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME},
	} {
		if flags&f.ms != 0 {
			attr.Attr_set |= f.attr
		}
	}
	switch {
	case flags&unix.MS_STRICTATIME != 0:
		attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
		attr.Attr_set |= unix.MOUNT_ATTR_STRICTATIME
	case flags&unix.MS_NOATIME != 0:
		attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
		attr.Attr_set |= unix.MOUNT_ATTR_NOATIME
	case flags&unix.MS_RELATIME != 0:
		attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
		attr.Attr_set |= unix.MOUNT_ATTR_RELATIME
	}
	return attr
}

// cloneMount clones the mount tree at the file or directory fd (with the
// mounts below it when recursive) as a detached mount and adds the
// read-only, nosuid, nodev, noexec and atime flags of flags to every mount
// in it. The caller closes the returned fd.
func cloneMount(fd int, recursive bool, flags uintptr) (int, error) {
	how := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_EMPTY_PATH)
	if recursive {
		how |= unix.AT_RECURSIVE
	}
	tree, err := unix.OpenTree(fd, "", how)
	if err != nil {
		return -1, fmt.Errorf("clone mount: %w", mountAPIErr(err))
	}
	attr := mountAttr(flags)
	if attr.Attr_set == 0 && attr.Attr_clr == 0 {
		return tree, nil
	}
	at := uint(unix.AT_EMPTY_PATH)
	if recursive {
		at |= unix.AT_RECURSIVE
	}
	if err := unix.MountSetattr(tree, "", at, &attr); err != nil {
		unix.Close(tree)
		return -1, fmt.Errorf("set mount flags: %w", mountAPIErr(err))
	}
	return tree, nil
}

// newMount makes a new filesystem of type fstype, configured with the
// mount(8) data words ("size=1m,mode=755", "newinstance"), as a detached
// mount with the flags of flags. The caller closes the returned fd.
func newMount(fstype, data string, flags uintptr) (int, error) {
	fs, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", fstype, mountAPIErr(err))
	}
	defer unix.Close(fs)
	if err := unix.FsconfigSetString(fs, "source", fstype); err != nil {
		return -1, fmt.Errorf("configure %s: %w", fstype, err)
	}
	for _, w := range strings.Split(data, ",") {
		if w == "" {
			continue
		}
		if k, v, ok := strings.Cut(w, "="); ok {
			err = unix.FsconfigSetString(fs, k, v)
		} else {
			err = unix.FsconfigSetFlag(fs, w)
		}
		if err != nil {
			return -1, fmt.Errorf("configure %s: option %q: %w", fstype, w, err)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return -1, fmt.Errorf("create %s: %w", fstype, err)
	}
	attr := mountAttr(flags)
	m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, int(attr.Attr_set))
	if err != nil {
		return -1, fmt.Errorf("mount %s: %w", fstype, err)
	}
	return m, nil
}

// attach moves the detached mount tree onto the mountpoint open as
// target.
func attach(tree, target int) error {
	err := unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("attach mount: %w", mountAPIErr(err))
	}
	return nil
}

// fdPath names the open fd through /proc/self/fd, for the calls that
// take a path only. The path leads to what fd is open on, wherever that
// is now; the init uses it only before it leaves the host's /proc.
func fdPath(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}

// openSource opens, as an O_PATH fd, the source of the bind mount m: the
// path m.Source resolved inside the directory m.Root (see openInRoot).
func openSource(m Mount) (*os.File, error) {
	root, err := unix.Open(m.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open mount root: %w", err)
	}
	defer unix.Close(root)
	fd, err := openInRoot(root, m.Source, unix.O_PATH)
	if err != nil {
		return nil, fmt.Errorf("resolve source /%s: %w", strings.TrimLeft(m.Source, "/"), err)
	}
	return os.NewFile(uintptr(fd), m.Source), nil
}

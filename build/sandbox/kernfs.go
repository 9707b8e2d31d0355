package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The kernel's filesystems in the sandbox: /proc, a minimal /dev and a
// read-only /sys, with Docker's masked and read-only paths.

// mountProc mounts a new proc filesystem, the PID namespace's, on /proc.
func (s *sandbox) mountProc() error {
	t, p, err := s.stubs.ensure("/proc", true)
	if err != nil {
		return err
	}
	defer t.Close()
	m, err := s.mountNew("proc", "", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, t, p)
	if err != nil {
		return err
	}
	unix.Close(m)
	return nil
}

// mountChrootProc mounts /proc for a chroot-mode run where the init has a
// PID namespace of its own: the namespace's /proc, which shows the run's
// processes only. Without one, /proc is left out: a proc mount would show
// the host's processes and their command lines and environments. Its
// hidepid option does not keep them from a root RUN: processes of other
// users and with more capabilities are hidden, but one group is exempt
// (root's, unless another is named in the mount options, which the RUN can
// read), and CAP_SETGID lets root join any group.
func (s *sandbox) mountChrootProc() error {
	if !s.pidNS {
		return nil
	}
	return s.mountProc()
}

// devices are the character devices of the sandbox's /dev.
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
	{"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// mountDev mounts a minimal /dev on tmpfs: the usual devices, a private
// devpts, /dev/shm and the stdio symlinks. Unless the run is insecure, the
// tmpfs itself is then made nodev, so that a node the command creates in
// /dev cannot be opened; each standard device sits on a bind mount of its
// own (see makeDevice), which keeps it usable, and devpts allows no mknod.
func (s *sandbox) mountDev() error {
	t, p, err := s.stubs.ensure("/dev", true)
	if err != nil {
		return err
	}
	defer t.Close()
	m, err := s.mountNew("tmpfs", "mode=755,size=65536k", unix.MS_NOSUID|unix.MS_STRICTATIME, t, p)
	if err != nil {
		return err
	}
	defer unix.Close(m)
	// The new tmpfs is filled through its own fd.
	dev := fdPath(m)
	for _, d := range devices {
		if err := makeDevice(filepath.Join(dev, d.name), d.name, d.major, d.minor); err != nil {
			return err
		}
	}
	pts := filepath.Join(dev, "pts")
	if err := os.Mkdir(pts, 0o755); err != nil {
		return fmt.Errorf("create /dev/pts: %w", err)
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC,
		"newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return fmt.Errorf("mount devpts on /dev/pts: %w", err)
	}
	shm := filepath.Join(dev, "shm")
	if err := os.Mkdir(shm, 0o1777); err != nil {
		return fmt.Errorf("create /dev/shm: %w", err)
	}
	size := s.cfg.ShmSize
	if size <= 0 { // size=0 would mean no limit at all
		size = DefaultShmSize
	}
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		fmt.Sprintf("mode=1777,size=%d", size)); err != nil {
		return fmt.Errorf("mount tmpfs on /dev/shm: %w", err)
	}
	for _, l := range [][2]string{
		{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	} {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("create /dev/%s: %w", l[1], err)
		}
	}
	if s.cfg.Insecure {
		return nil
	}
	// Only the tmpfs's own mount: the device binds and devpts below it
	// keep their flags.
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(m, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("make /dev nodev: %w", err)
	}
	return nil
}

// makeDevice creates a character device node and binds it onto itself, or,
// where mknod is not allowed, bind-mounts the host's device on an empty
// file. Either way the device is a mount of its own, whose flags stay when
// the /dev tmpfs is made nodev.
func makeDevice(path, name string, major, minor uint32) error {
	err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor)))
	if err == nil || !errors.Is(err, unix.EPERM) {
		if err != nil {
			return fmt.Errorf("create /dev/%s: %w", name, err)
		}
		if err := unix.Mount(path, path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", name, err)
		}
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		return fmt.Errorf("create /dev/%s: %w", name, err)
	}
	f.Close()
	if err := unix.Mount("/dev/"+name, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /dev/%s: %w", name, err)
	}
	return nil
}

// mountSys mounts a read-only sysfs, or a read-only bind of the host's /sys
// where a new sysfs is not allowed.
func (s *sandbox) mountSys() error {
	t, p, err := s.stubs.ensure("/sys", true)
	if err != nil {
		return err
	}
	defer t.Close()
	const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if m, err := s.mountNew("sysfs", "", flags, t, p); err == nil {
		unix.Close(m)
		return nil
	}
	sys, err := unix.Open("/sys", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount sysfs on %s: %w", p, err)
	}
	defer unix.Close(sys)
	tree, err := cloneMount(sys, true, flags)
	if err != nil {
		return fmt.Errorf("mount sysfs on %s: %w", p, err)
	}
	defer unix.Close(tree)
	if err := s.attach(tree, t, p); err != nil {
		return fmt.Errorf("mount sysfs on %s: %w", p, err)
	}
	return nil
}

// maskedPaths are hidden and readonlyPaths made read-only, as Docker does by
// default.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// maskPaths hides and write-protects the kernel interfaces that Docker's
// default profile does, unless the run is insecure. The mounts sit on /proc
// and /sys and go away with them. Each path is resolved inside the root.
func (s *sandbox) maskPaths() error {
	if s.cfg.Insecure {
		return nil
	}
	null, err := s.stubs.open("/dev/null", unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("open /dev/null: %w", err)
	}
	defer unix.Close(null)
	for _, p := range maskedPaths {
		if err := s.maskPath(p, null); err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	for _, p := range readonlyPaths {
		fd, err := s.stubs.open(p, unix.O_PATH|unix.O_NOFOLLOW)
		if err != nil {
			continue
		}
		const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
		tree, err := cloneMount(fd, true, flags)
		if err == nil {
			err = attach(tree, fd)
			unix.Close(tree)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("make %s read-only: %w", p, err)
		}
	}
	return nil
}

// maskPath hides the root-relative p, if it exists, under an empty
// read-only tmpfs (a directory) or the sandbox's /dev/null, open as null
// (anything else).
func (s *sandbox) maskPath(p string, null int) error {
	fd, err := s.stubs.open(p, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var tree int
	if isDirFD(fd) {
		tree, err = newMount("tmpfs", "size=0", unix.MS_RDONLY)
	} else {
		tree, err = cloneMount(null, false, 0)
	}
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	return attach(tree, fd)
}

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"builder/snapshot"
)

// flagOptions maps mount(8) flag words to the flags they set (set) or clear
// (!set).
var flagOptions = map[string]struct {
	set  bool
	flag uintptr
}{
	"ro":            {true, unix.MS_RDONLY},
	"rw":            {false, unix.MS_RDONLY},
	"bind":          {true, unix.MS_BIND},
	"rbind":         {true, unix.MS_BIND | unix.MS_REC},
	"nosuid":        {true, unix.MS_NOSUID},
	"suid":          {false, unix.MS_NOSUID},
	"nodev":         {true, unix.MS_NODEV},
	"dev":           {false, unix.MS_NODEV},
	"noexec":        {true, unix.MS_NOEXEC},
	"exec":          {false, unix.MS_NOEXEC},
	"sync":          {true, unix.MS_SYNCHRONOUS},
	"async":         {false, unix.MS_SYNCHRONOUS},
	"dirsync":       {true, unix.MS_DIRSYNC},
	"noatime":       {true, unix.MS_NOATIME},
	"atime":         {false, unix.MS_NOATIME},
	"nodiratime":    {true, unix.MS_NODIRATIME},
	"diratime":      {false, unix.MS_NODIRATIME},
	"relatime":      {true, unix.MS_RELATIME},
	"norelatime":    {false, unix.MS_RELATIME},
	"strictatime":   {true, unix.MS_STRICTATIME},
	"nostrictatime": {false, unix.MS_STRICTATIME},
	"defaults":      {false, 0},
}

// propagationOptions are accepted and ignored: the sandbox makes every mount
// private.
var propagationOptions = map[string]bool{
	"private": true, "rprivate": true, "shared": true, "rshared": true,
	"slave": true, "rslave": true, "unbindable": true, "runbindable": true,
}

// parseOptions splits mount(8) words into mount flags and the data string.
func parseOptions(opts []string) (flags uintptr, data string) {
	var rest []string
	for _, o := range opts {
		if f, ok := flagOptions[o]; ok {
			if f.set {
				flags |= f.flag
			} else {
				flags &^= f.flag
			}
			continue
		}
		if propagationOptions[o] {
			continue
		}
		rest = append(rest, o)
	}
	return flags, strings.Join(rest, ",")
}

// attrFlags are the per-mount flags that a bind remount can change.
const attrFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
	unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME

// mountRoot mounts one root mount m on target. For an overlay, a non-empty
// extraLower is added as the lowest layer. With nodev, the mount (and, for
// a recursive bind, every mount below it) is nodev whatever m's options say:
// a RUN may create a device node in the root (it keeps CAP_MKNOD, as in
// Docker) and an image may hold one, but no process can open it there.
func mountRoot(m snapshot.Mount, target, extraLower string, nodev bool) error {
	flags, data := parseOptions(m.Options)
	if nodev {
		flags |= unix.MS_NODEV
	}
	if m.Type == "bind" || flags&unix.MS_BIND != 0 {
		if flags&unix.MS_BIND == 0 {
			flags |= unix.MS_BIND | unix.MS_REC
		}
		if err := bindMount(m.Source, target, flags); err != nil {
			return fmt.Errorf("mount %s: %w", m.Type, err)
		}
		return nil
	}
	if m.Type == "overlay" && extraLower != "" {
		opts := strings.Split(data, ",")
		for i, o := range opts {
			if strings.HasPrefix(o, "lowerdir=") {
				opts[i] = o + ":" + extraLower
			}
		}
		data = strings.Join(opts, ",")
	}
	if m.Type == "overlay" && len(data) >= os.Getpagesize() {
		var err error
		if data, err = shortenOverlay(data, extraLower); err != nil {
			return fmt.Errorf("mount overlay: %w", err)
		}
	}
	if err := unix.Mount(m.Source, target, m.Type, flags, data); err != nil {
		return fmt.Errorf("mount %s: %w", m.Type, err)
	}
	return nil
}

// bindMount bind-mounts source on target (recursively when flags has
// MS_REC) and then applies the read-only, nosuid, nodev and noexec flags of
// flags, recursively for a recursive bind.
func bindMount(source, target string, flags uintptr) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND|flags&unix.MS_REC, ""); err != nil {
		return err
	}
	if flags&attrFlags == 0 {
		return nil
	}
	return setMountFlags(target, flags&attrFlags, flags&unix.MS_REC != 0)
}

// setMountFlags adds flags (read-only, nosuid, nodev, noexec) to the mount
// at target, recursively if asked, keeping the flags it has. It uses
// mount_setattr(2) and falls back to a bind remount on old kernels, which
// changes only the top mount.
func setMountFlags(target string, flags uintptr, recursive bool) error {
	attr := mountAttr(flags & (unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC))
	atFlags := uint(unix.AT_SYMLINK_NOFOLLOW)
	if recursive {
		atFlags |= unix.AT_RECURSIVE
	}
	if attr.Attr_set != 0 && flags&^(unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC) == 0 {
		err := unix.MountSetattr(unix.AT_FDCWD, target, atFlags, &attr)
		if err == nil || !errors.Is(err, unix.ENOSYS) {
			return err
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return err
	}
	keep := uintptr(st.Flags) & (unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
		unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME)
	return unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|keep|flags, "")
}

// shortenOverlay makes overlay mount data fit in a page by changing to the
// deepest directory common to the lower directories other than keep and
// naming them relative to it, as containerd does. The caller must not depend
// on its working directory afterwards.
func shortenOverlay(data, keep string) (string, error) {
	opts := strings.Split(data, ",")
	var lowers []string
	li := -1
	for i, o := range opts {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			lowers, li = strings.Split(v, ":"), i
		}
	}
	common := ""
	for _, l := range lowers {
		if l == keep {
			continue
		}
		if common == "" {
			common = filepath.Dir(l)
		}
		for common != "/" && !strings.HasPrefix(l, common+"/") {
			common = filepath.Dir(common)
		}
	}
	if common == "" || common == "/" || !filepath.IsAbs(common) {
		return data, nil
	}
	rel := make([]string, len(lowers))
	for i, l := range lowers {
		if l == keep {
			rel[i] = l
		} else {
			rel[i] = strings.TrimPrefix(l, common+"/")
		}
	}
	if err := unix.Chdir(common); err != nil {
		return "", err
	}
	opts[li] = "lowerdir=" + strings.Join(rel, ":")
	return strings.Join(opts, ","), nil
}

// mountNew mounts a new filesystem (see newMount) on the mountpoint open
// as target, at the root-relative rel, records it, and returns the mount's
// fd, which the caller closes.
func (s *sandbox) mountNew(fstype, data string, flags uintptr, target *os.File, rel string) (int, error) {
	m, err := newMount(fstype, data, flags)
	if err != nil {
		return -1, fmt.Errorf("mount %s on %s: %w", fstype, rel, err)
	}
	if err := s.attach(m, target, rel); err != nil {
		unix.Close(m)
		return -1, fmt.Errorf("mount %s on %s: %w", fstype, rel, err)
	}
	return m, nil
}

// attach moves the detached mount tree onto the mountpoint open as target,
// at the root-relative rel, and records it.
func (s *sandbox) attach(tree int, target *os.File, rel string) error {
	if err := attach(tree, int(target.Fd())); err != nil {
		return err
	}
	s.mounts = append(s.mounts, rel)
	return nil
}

// mountEtc bind-mounts the run's hosts and resolv.conf read-only, as
// BuildKit does.
func (s *sandbox) mountEtc() error {
	for _, f := range []struct{ target, source string }{
		{"/etc/hosts", s.hostsFile},
		{"/etc/resolv.conf", s.resolvFile},
	} {
		if err := s.bindFile(f.source, f.target); err != nil {
			return fmt.Errorf("mount %s: %w", f.target, err)
		}
	}
	return nil
}

// bindFile bind-mounts the init's own file source read-only on the
// root-relative target, creating a stub for it if needed.
func (s *sandbox) bindFile(source, target string) error {
	src, err := unix.Open(source, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	t, p, err := s.stubs.ensure(target, false)
	if err != nil {
		return err
	}
	defer t.Close()
	tree, err := cloneMount(src, false, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	return s.attach(tree, t, p)
}

// source returns the source of the bind mount cfg.Mounts[i], resolved
// inside its root and opened (O_PATH) on the first call (see openSource);
// every later use goes through that fd.
func (s *sandbox) source(i int) (*os.File, error) {
	if s.sources == nil {
		s.sources = make([]*os.File, len(s.cfg.Mounts))
	}
	if s.sources[i] != nil {
		return s.sources[i], nil
	}
	f, err := openSource(s.cfg.Mounts[i])
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", s.cfg.Mounts[i].Target, err)
	}
	s.sources[i] = f
	return f, nil
}

// isDirFD reports whether fd is open on a directory.
func isDirFD(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// mountExtra applies the RUN --mount mounts, all of them nosuid and nodev:
// binds from their sources' fds (see source) and new tmpfs filesystems,
// each on its mountpoint's fd (see stubs.ensure).
func (s *sandbox) mountExtra() error {
	for i, m := range s.cfg.Mounts {
		flags, data := parseOptions(m.Options)
		flags |= unix.MS_NOSUID | unix.MS_NODEV
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		switch m.Type {
		case "bind":
			src, err := s.source(i)
			if err != nil {
				return err
			}
			t, p, err := s.stubs.ensure(m.Target, isDirFD(int(src.Fd())))
			if err != nil {
				return err
			}
			recursive := flags&unix.MS_BIND == 0 || flags&unix.MS_REC != 0
			tree, err := cloneMount(int(src.Fd()), recursive, flags)
			if err == nil {
				err = s.attach(tree, t, p)
				unix.Close(tree)
			}
			t.Close()
			if err != nil {
				return fmt.Errorf("mount %s: %w", m.Target, err)
			}
		case "tmpfs":
			t, p, err := s.stubs.ensure(m.Target, true)
			if err != nil {
				return err
			}
			tree, err := s.mountNew("tmpfs", data, flags, t, p)
			t.Close()
			if err != nil {
				return err
			}
			unix.Close(tree)
		default:
			return fmt.Errorf("mount %s: unsupported type %q", m.Target, m.Type)
		}
	}
	return nil
}

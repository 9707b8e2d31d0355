// Package mount describes mount(2) calls and performs them inside a private
// mount namespace that belongs to one locked OS thread.
//
// Mounts made by InNamespace and WithMounts exist only in the mount
// namespace of a single thread. That thread is never unlocked: when the
// function returns, the goroutine exits and the Go runtime terminates the
// thread, which drops the namespace and every mount in it. A builder killed
// with SIGKILL therefore leaks no mount; the kernel tears them down with the
// namespace.
package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one mount(2) call: a filesystem type, a source and options, the
// way containerd describes mounts. Options holds the comma-separated data
// string split into words; "ro" and "rbind"/"bind" are turned into flags.
type Mount struct {
	Type    string   // "overlay" or "bind"
	Source  string   // "overlay", or the directory for a bind mount
	Options []string // e.g. "lowerdir=a:b", "upperdir=u", "workdir=w", "ro", "rbind"
}

// pageSize bounds the data string the kernel accepts for one mount call.
var pageSize = os.Getpagesize()

// parse splits m.Options into mount flags and the data string.
func (m Mount) parse() (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range m.Options {
		switch o {
		case "ro":
			flags |= unix.MS_RDONLY
		case "rw":
		case "bind":
			flags |= unix.MS_BIND
		case "rbind":
			flags |= unix.MS_BIND | unix.MS_REC
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		default:
			data = append(data, o)
		}
	}
	if m.Type == "bind" {
		flags |= unix.MS_BIND
	}
	return flags, strings.Join(data, ",")
}

// To mounts m on target. A read-only bind mount takes a second remount
// call, as the kernel ignores MS_RDONLY on the first. An overlay data string
// longer than a page is shortened by changing the calling thread's working
// directory to the lower directories' common parent and passing relative
// paths; that is only safe on a thread that has unshared CLONE_FS, as
// InNamespace does, so To refuses otherwise-too-long options unless
// relativeOK is set.
func (m Mount) To(target string, relativeOK bool) error {
	flags, data := m.parse()
	typ, src := m.Type, m.Source
	if flags&unix.MS_BIND != 0 {
		typ = ""
	}
	if m.Type == "overlay" && len(data) >= pageSize {
		if !relativeOK {
			return fmt.Errorf("mount overlay on %s: options exceed %d bytes", target, pageSize)
		}
		rel, dir, err := relativeOverlay(data)
		if err != nil {
			return fmt.Errorf("mount overlay on %s: %w", target, err)
		}
		if len(rel) >= pageSize {
			return fmt.Errorf("mount overlay on %s: options exceed %d bytes even relative to %s", target, pageSize, dir)
		}
		if err := unix.Chdir(dir); err != nil {
			return fmt.Errorf("mount overlay on %s: chdir %s: %w", target, dir, err)
		}
		defer unix.Chdir("/") //nolint:errcheck // the thread's cwd is private and the thread dies soon
		data = rel
	}
	// The kernel ignores MS_RDONLY on a new bind mount; the remount below
	// applies it.
	if err := unix.Mount(src, target, typ, flags, data); err != nil {
		return fmt.Errorf("mount %s %s on %s: %w", m.Type, src, target, err)
	}
	if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
		rf := unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | flags&(unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)
		if err := unix.Mount("", target, "", rf, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

// relativeOverlay rewrites the lowerdir, upperdir and workdir paths of an
// overlay data string relative to their longest common parent directory.
func relativeOverlay(data string) (string, string, error) {
	opts := strings.Split(data, ",")
	var paths []string
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			paths = append(paths, strings.Split(v, ":")...)
		case "upperdir", "workdir":
			paths = append(paths, v)
		}
	}
	if len(paths) == 0 {
		return "", "", errors.New("no directories to shorten")
	}
	common := filepath.Dir(paths[0])
	for _, p := range paths[1:] {
		for common != "/" && !strings.HasPrefix(p, common+"/") {
			common = filepath.Dir(common)
		}
	}
	if !filepath.IsAbs(common) || common == "/" {
		return "", "", errors.New("directories share no parent")
	}
	rel := func(p string) string { return strings.TrimPrefix(p, common+"/") }
	for i, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			ls := strings.Split(v, ":")
			for j := range ls {
				ls[j] = rel(ls[j])
			}
			opts[i] = k + "=" + strings.Join(ls, ":")
		case "upperdir", "workdir":
			opts[i] = k + "=" + rel(v)
		}
	}
	return strings.Join(opts, ","), common, nil
}

// Unmount detaches target and everything mounted below it. Unmounting a path
// that is not a mount point is not an error.
func Unmount(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

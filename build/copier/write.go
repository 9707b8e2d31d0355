package copier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// writer is the visitor that Copy walks the sources with. Every file it
// makes is created relative to an open directory handle of the
// destination with O_NOFOLLOW semantics.
type writer struct {
	src   Source
	req   Request
	mode  *chmod
	srcR  *root
	dst   *root
	links map[string]string // node id → destination path (root-relative) of the first copy
	stack []*dstDir
}

// dstDir is a destination directory being filled.
type dstDir struct {
	f    *os.File
	rel  string // below the destination root, "." for the root
	root bool   // the destination of a directory item: gets only its times
}

func (d *dstDir) fd() int { return int(d.f.Fd()) }

func (d *dstDir) child(name string) string { return joinRel(d.rel, name) }

// run copies the selection into the destination.
func (w *writer) run(ctx context.Context, sel *selection) error {
	req := w.req
	destLex := path.Clean(strings.TrimLeft(req.Dest, "/"))
	if strings.HasPrefix(destLex, "..") {
		destLex = path.Clean("/" + destLex)[1:]
	}
	if destLex == "" {
		destLex = "."
	}
	dirDest := destIsDirSyntax(req.Dest)
	destRel, err := w.dst.resolve(destLex)
	if err != nil {
		return fmt.Errorf("resolve destination %s: %w", req.Dest, err)
	}
	destIsDir := false
	if f, err := openBeneath(w.dst.fd(), destRel, unix.O_PATH); err == nil {
		st, err := fstat(f)
		f.Close()
		if err != nil {
			return err
		}
		destIsDir = st.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	wk := newWalker(ctx, w.src.Ignore, sel.exclude, w)
	for _, it := range sel.items {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := w.copyItem(wk, it, destRel, dirDest || destIsDir); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) copyItem(wk *walker, it item, destRel string, intoDir bool) error {
	uid, gid := w.createdOwner()
	if w.req.Add && it.st.Mode&unix.S_IFMT == unix.S_IFREG {
		done, err := w.extract(it, destRel)
		if done || err != nil {
			return err
		}
	}
	parentRel, name := destRel, it.base
	if it.isDir() {
		d, err := w.mkdirAll(destRel, w.mode.createdPerm(), uid, gid)
		if err != nil {
			return err
		}
		w.stack = []*dstDir{{f: d, rel: destRel, root: true}}
		defer func() { d.Close(); w.stack = nil }()
		return wk.walkItem(w.srcR, it, "")
	}
	if !intoDir {
		parentRel, name = path.Dir(destRel), path.Base(destRel)
	}
	d, err := w.mkdirAll(parentRel, w.mode.createdPerm(), uid, gid)
	if err != nil {
		return err
	}
	w.stack = []*dstDir{{f: d, rel: parentRel}}
	defer func() { d.Close(); w.stack = nil }()
	return wk.walkItem(w.srcR, it, name)
}

// createdOwner is the owner of directories that Copy creates.
func (w *writer) createdOwner() (int, int) {
	if w.req.Chown != nil {
		return w.req.Chown.UID, w.req.Chown.GID
	}
	return 0, 0
}

// owner is the owner a copied entry gets.
func (w *writer) owner(st *unix.Stat_t) (int, int) {
	switch {
	case w.req.Chown != nil:
		return w.req.Chown.UID, w.req.Chown.GID
	case w.src.IsContext:
		return 0, 0
	}
	return int(st.Uid), int(st.Gid)
}

// mkdirAll opens the directory rel (root-relative, symlinks already
// resolved) in the destination, creating missing components with mode
// perm and owner uid:gid. A symlink met on the way is an error, not
// followed. The caller closes the result.
func (w *writer) mkdirAll(rel string, perm uint32, uid, gid int) (*os.File, error) {
	cur, err := openBeneath(w.dst.fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, fmt.Errorf("open destination root: %w", err)
	}
	if rel == "." {
		return cur, nil
	}
	done := ""
	for _, comp := range strings.Split(rel, "/") {
		done = joinRel(done, comp)
		next, err := openDirAt(int(cur.Fd()), comp, "/"+done)
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(int(cur.Fd()), comp, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				cur.Close()
				return nil, fmt.Errorf("mkdir /%s: %w", done, err)
			}
			next, err = openDirAt(int(cur.Fd()), comp, "/"+done)
			if err == nil {
				err = setOwnerMode(next, uid, gid, perm)
			}
		}
		cur.Close()
		switch {
		case errors.Is(err, unix.ENOTDIR):
			return nil, fmt.Errorf("mkdir /%s: not a directory", done)
		case errors.Is(err, unix.ELOOP):
			return nil, fmt.Errorf("mkdir /%s: %w", done, errChanged)
		case err != nil:
			return nil, err
		}
		cur = next
	}
	return cur, nil
}

func setOwnerMode(f *os.File, uid, gid int, perm uint32) error {
	if err := unix.Fchown(int(f.Fd()), uid, gid); err != nil {
		return &os.PathError{Op: "chown", Path: f.Name(), Err: err}
	}
	if err := unix.Fchmod(int(f.Fd()), perm); err != nil {
		return &os.PathError{Op: "chmod", Path: f.Name(), Err: err}
	}
	return nil
}

func (w *writer) top() *dstDir { return w.stack[len(w.stack)-1] }

// enterDir creates or opens the destination directory of n.
func (w *writer) enterDir(n *node) error {
	if n.rel == "" {
		return nil // the item's destination, opened by copyItem
	}
	parent := w.top()
	target := parent.child(n.name)
	st, err := lstatAt(parent.fd(), n.name)
	switch {
	case errors.Is(err, unix.ENOENT):
		if err := unix.Mkdirat(parent.fd(), n.name, 0o700); err != nil {
			return fmt.Errorf("mkdir /%s: %w", target, err)
		}
	case err != nil:
		return fmt.Errorf("stat /%s: %w", target, err)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("copy %s: cannot copy to non-directory: /%s", path.Join("/", n.rel), target)
	}
	f, err := openDirAt(parent.fd(), n.name, "/"+target)
	if err != nil {
		return err
	}
	w.stack = append(w.stack, &dstDir{f: f, rel: target})
	return nil
}

// leaveDir gives the finished directory its metadata (the item's own
// destination gets only the source's times, as in BuildKit).
func (w *writer) leaveDir(n *node) error {
	d := w.top()
	if d.root {
		return setTimes(d.f, &n.st)
	}
	w.stack = w.stack[:len(w.stack)-1]
	defer d.f.Close()
	uid, gid := w.owner(&n.st)
	if err := setOwnerMode(d.f, uid, gid, w.mode.apply(n.st.Mode, true)); err != nil {
		return err
	}
	if err := setXattrs(d.f, n.xattrs); err != nil {
		return err
	}
	return setTimes(d.f, &n.st)
}

// leaf creates the non-directory n in the current destination directory,
// replacing a non-directory that is there.
func (w *writer) leaf(n *node) error {
	parent := w.top()
	target := parent.child(n.name)
	st, err := lstatAt(parent.fd(), n.name)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return fmt.Errorf("copy %s: cannot replace directory /%s with a %s", w.display(n), target, fileType(n.st.Mode))
	case err == nil:
		if err := unix.Unlinkat(parent.fd(), n.name, 0); err != nil {
			return fmt.Errorf("remove /%s: %w", target, err)
		}
	case !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("stat /%s: %w", target, err)
	}
	uid, gid := w.owner(&n.st)
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if n.linkOf != "" {
			if done, err := w.hardlink(parent, n, target); done || err != nil {
				return err
			}
		}
		if err := w.writeFile(parent, n, target, uid, gid); err != nil {
			return err
		}
		if n.st.Nlink > 1 && n.linkOf == "" {
			w.links[n.id] = target
		}
		return nil
	case unix.S_IFLNK:
		if err := unix.Symlinkat(n.target, parent.fd(), n.name); err != nil {
			return fmt.Errorf("symlink /%s: %w", target, err)
		}
	default:
		if err := mknod(parent.fd(), n); err != nil {
			return fmt.Errorf("mknod /%s: %w", target, err)
		}
		if err := unix.Fchownat(parent.fd(), n.name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown /%s: %w", target, err)
		}
		mode := w.mode.apply(n.st.Mode, false)
		err := unix.Fchmodat(parent.fd(), n.name, mode, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			err = unix.Fchmodat(parent.fd(), n.name, mode, 0) // just made: not a symlink
		}
		if err != nil {
			return fmt.Errorf("chmod /%s: %w", target, err)
		}
	}
	if n.st.Mode&unix.S_IFMT == unix.S_IFLNK {
		if err := unix.Fchownat(parent.fd(), n.name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown /%s: %w", target, err)
		}
	}
	ts := []unix.Timespec{n.st.Atim, n.st.Mtim}
	if err := unix.UtimesNanoAt(parent.fd(), n.name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of /%s: %w", target, err)
	}
	return nil
}

// display names the source entry n in errors.
func (w *writer) display(n *node) string {
	if n.rel == "" {
		return n.name
	}
	return n.rel
}

// writeFile streams the regular file n into a new file.
func (w *writer) writeFile(parent *dstDir, n *node, target string, uid, gid int) error {
	fd, err := unix.Openat(parent.fd(), n.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create /%s: %w", target, err)
	}
	out := os.NewFile(uintptr(fd), "/"+target)
	defer out.Close()
	if _, err := io.Copy(out, n.file); err != nil {
		return fmt.Errorf("copy %s to /%s: %w", w.display(n), target, err)
	}
	if err := setOwnerMode(out, uid, gid, w.mode.apply(n.st.Mode, false)); err != nil {
		return err
	}
	if err := setXattrs(out, n.xattrs); err != nil {
		return err
	}
	if err := setTimes(out, &n.st); err != nil {
		return err
	}
	return out.Close()
}

// hardlink links target to the earlier copy of the same source inode. It
// reports false when that copy is gone, and the file is then copied.
func (w *writer) hardlink(parent *dstDir, n *node, target string) (bool, error) {
	first, ok := w.links[n.linkOf]
	if !ok {
		return false, nil
	}
	dir, err := openBeneath(w.dst.fd(), path.Dir(first), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return false, nil
	}
	defer dir.Close()
	err = unix.Linkat(int(dir.Fd()), path.Base(first), parent.fd(), n.name, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("link /%s to /%s: %w", target, first, err)
	}
	return true, nil
}

// setXattrs copies extended attributes, best effort like BuildKit: the
// ones the destination file system refuses are skipped.
func setXattrs(f *os.File, xs []xattr) error {
	for _, x := range xs {
		err := unix.Fsetxattr(int(f.Fd()), x.name, x.value, 0)
		switch {
		case err == nil,
			errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EOPNOTSUPP),
			errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES), errors.Is(err, unix.EINVAL):
		default:
			return fmt.Errorf("set xattr %s on %s: %w", x.name, f.Name(), err)
		}
	}
	return nil
}

// setTimes gives the open file f the access and modification times of st.
func setTimes(f *os.File, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNano(fdPath(f), ts); err != nil {
		return &os.PathError{Op: "utimes", Path: f.Name(), Err: err}
	}
	return nil
}

// mknod makes the special file n in dir: a device or fifo as it is, a
// socket as an empty regular file (as BuildKit's file transfer has it; a
// layer cannot hold a socket).
func mknod(dir int, n *node) error {
	if n.st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return unix.Mknodat(dir, n.name, n.st.Mode&unix.S_IFMT|0o600, int(n.st.Rdev))
	}
	fd, err := unix.Openat(dir, n.name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

package copier

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"builder/snapshot/archive"
)

// ErrNotOnePass reports a request that WriteLayer cannot turn into a layer
// by itself: the caller copies into a snapshot and diffs it instead.
var ErrNotOnePass = errors.New("copy needs the destination tree")

// WriteLayer writes to aw the layer entries that Copy of req into a tree
// followed by a diff of that tree gives, reading each source once and
// writing nothing to disk. It covers the common case whose result depends
// on the sources alone:
//
//   - the destination is one path component below "/" ("/app", "/app/"),
//     which the caller has checked does not exist in the destination tree,
//     so nothing below it is merged, replaced or whited out;
//   - one item is selected (a directory, or a non-directory copied to a
//     destination without a trailing slash), with no --parents and no ADD;
//   - every copied entry is a directory, a regular file or a symlink, with
//     no extended attributes and no name that reads as a whiteout.
//
// Outside it, WriteLayer returns ErrNotOnePass, possibly after writing
// entries: the caller discards them. The entries, their order and their
// headers are those the layer writer gives for the copied tree: what Copy
// creates, with the metadata it sets. Close aw after.
func WriteLayer(ctx context.Context, src Source, req Request, aw *archive.Writer) error {
	if req.Add || req.Parents {
		return ErrNotOnePass
	}
	name, ok := topLevel(req.Dest)
	if !ok {
		return ErrNotOnePass
	}
	mode, sr, sel, err := openSources(ctx, src, req)
	if err != nil {
		return err
	}
	defer sr.close()
	if len(sel.items) != 1 {
		return ErrNotOnePass
	}
	it := sel.items[0]
	lw := &layerWriter{src: src, req: req, mode: mode, aw: aw, links: map[string]string{}}
	if lw.uids, err = readIDMap("/proc/self/uid_map"); err != nil {
		return ErrNotOnePass
	}
	if lw.gids, err = readIDMap("/proc/self/gid_map"); err != nil {
		return ErrNotOnePass
	}
	wk := newWalker(ctx, src.Ignore, sel.exclude, lw)
	if !it.isDir() {
		if destIsDirSyntax(req.Dest) {
			return ErrNotOnePass // Copy would create the directory at the time of the copy
		}
		lw.prefix = ""
		return wk.walkItem(sr, it, name)
	}
	lw.prefix = name
	return wk.walkItem(sr, it, "")
}

// topLevel returns the one path component of dest below "/", if it has
// exactly one.
func topLevel(dest string) (string, bool) {
	p := path.Clean("/" + dest)
	if p == "/" || strings.Contains(p[1:], "/") {
		return "", false
	}
	name := p[1:]
	if strings.HasPrefix(name, archive.WhiteoutPrefix) {
		return "", false
	}
	return name, true
}

// layerWriter is the visitor that WriteLayer walks the item with: it turns
// each entry into the tar entry that Copy's result would give.
type layerWriter struct {
	src    Source
	req    Request
	mode   *chmod
	aw     *archive.Writer
	prefix string            // the destination directory of a directory item; "" for a file item
	links  map[string]string // node id → layer path of the first copy, as writer.links
	// uids and gids are the ranges of this user namespace: an owner
	// outside them is one Copy's chown would fail on.
	uids, gids []idRange
}

func (l *layerWriter) layerPath(n *node) string {
	if l.prefix == "" {
		return n.name // a non-directory item: its destination name
	}
	if n.rel == "" {
		return l.prefix
	}
	return l.prefix + "/" + n.rel
}

// owner is the owner a copied entry gets, as writer.owner.
func (l *layerWriter) owner(n *node) (int, int) {
	return (&writer{src: l.src, req: l.req}).owner(&n.st)
}

// header is the entry of n with its owner and mode, or nil when the owner
// is not mapped in this user namespace.
func (l *layerWriter) header(n *node, typ byte, mode uint32) *tar.Header {
	uid, gid := l.owner(n)
	if !mapped(l.uids, uid) || !mapped(l.gids, gid) {
		return nil
	}
	return &tar.Header{Typeflag: typ, Name: l.layerPath(n), Mode: int64(mode), Uid: uid, Gid: gid,
		ModTime: time.Unix(n.st.Mtim.Unix())}
}

// check refuses what Copy and the diff would treat differently from a
// plain entry: extended attributes (set best effort, kept or not by the
// destination file system) and whiteout-like names (a diff error).
func (l *layerWriter) check(n *node) error {
	if len(n.xattrs) > 0 || strings.HasPrefix(n.name, archive.WhiteoutPrefix) {
		return ErrNotOnePass
	}
	return nil
}

func (l *layerWriter) enterDir(n *node) error {
	if err := l.check(n); err != nil {
		return err
	}
	if n.rel == "" {
		// The item's destination: made by Copy with the created owner and
		// mode; only the source's times are set on it.
		uid, gid := (&writer{req: l.req}).createdOwner()
		if !mapped(l.uids, uid) || !mapped(l.gids, gid) {
			return ErrNotOnePass
		}
		h := &tar.Header{Typeflag: tar.TypeDir, Name: l.prefix, Mode: int64(l.mode.createdPerm()), Uid: uid, Gid: gid,
			ModTime: time.Unix(n.st.Mtim.Unix())}
		return l.aw.WriteEntry(h, nil)
	}
	h := l.header(n, tar.TypeDir, l.mode.apply(n.st.Mode, true))
	if h == nil {
		return ErrNotOnePass
	}
	return l.aw.WriteEntry(h, nil)
}

func (l *layerWriter) leaveDir(*node) error { return nil }

func (l *layerWriter) leaf(n *node) error {
	if err := l.check(n); err != nil {
		return err
	}
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		h := l.header(n, tar.TypeReg, l.mode.apply(n.st.Mode, false))
		if h == nil {
			return ErrNotOnePass
		}
		if n.linkOf != "" {
			if first, ok := l.links[n.linkOf]; ok {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				return l.aw.WriteEntry(h, nil)
			}
		}
		h.Size = n.st.Size
		if err := l.aw.WriteEntry(h, n.file); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return ErrNotOnePass // shrank while read: Copy takes what it reads
			}
			return err
		}
		var one [1]byte
		if k, _ := n.file.Read(one[:]); k > 0 {
			return ErrNotOnePass // grew while read
		}
		if n.st.Nlink > 1 && n.linkOf == "" {
			l.links[n.id] = h.Name
		}
		return nil
	case unix.S_IFLNK:
		h := l.header(n, tar.TypeSymlink, 0o777)
		if h == nil {
			return ErrNotOnePass
		}
		h.Linkname = n.target
		return l.aw.WriteEntry(h, nil)
	}
	// Devices, fifos and sockets: made by mknod, refused or replaced by
	// the destination; left to Copy.
	return ErrNotOnePass
}

// idRange is one line of /proc/self/uid_map: IDs inside the namespace
// from start, count of them.
type idRange struct{ start, count uint64 }

func readIDMap(file string) ([]idRange, error) {
	dt, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []idRange
	for _, line := range strings.Split(strings.TrimSpace(string(dt)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.ParseUint(f[0], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("parse %s: %q", file, line)
		}
		out = append(out, idRange{start, count})
	}
	return out, nil
}

// mapped reports whether id lies in one of the ranges.
func mapped(ranges []idRange, id int) bool {
	for _, r := range ranges {
		if id >= 0 && uint64(id) >= r.start && uint64(id)-r.start < r.count {
			return true
		}
	}
	return false
}

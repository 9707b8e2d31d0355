package copier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"

	"golang.org/x/sys/unix"
)

// checksumVersion changes whenever the checksum input changes, so that
// old cache records stop matching.
const checksumVersion = "builder-copier-checksum/1"

// Checksum returns "sha256:<hex>" over exactly what Copy would read for
// req: the request itself (sources, destination, flags) and, for every
// selected entry in walk order, its path, type, permission bits, owner
// (only for stage sources without --chown: context files are written as
// 0:0), size, symlink target, device number, hard link peer, extended
// attributes and the SHA-256 of its content. Modification times are left
// out, so a fresh checkout of the same context gives the same checksum.
//
// It fails the same way Copy does for missing, ignored or escaping
// sources and for invalid patterns or chmod values. It streams file
// contents and holds none of them. It reads only; calling it again on an
// unchanged source returns the same value.
func Checksum(ctx context.Context, src Source, req Request) (string, error) {
	mode, err := parseChmod(req.Chmod)
	if err != nil {
		return "", err
	}
	sr, err := openRoot(src.Root)
	if err != nil {
		return "", fmt.Errorf("open source root: %w", err)
	}
	defer sr.close()
	sel, err := selectSources(ctx, sr, src, req)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	header := struct {
		Version   string
		Sources   []string
		Dest      string
		Chown     *Owner
		Chmod     string
		Excludes  []string
		Parents   bool
		Add       bool
		Epoch     *int64
		IsContext bool
	}{checksumVersion, req.Sources, req.Dest, req.Chown, mode.String(), req.Excludes, req.Parents, req.Add, req.Epoch, src.IsContext}
	if err := json.NewEncoder(h).Encode(header); err != nil {
		return "", fmt.Errorf("encode checksum header: %w", err)
	}
	v := &hasher{h: h, ownership: !src.IsContext && req.Chown == nil, buf: make([]byte, 32<<10)}
	wk := newWalker(ctx, src.Ignore, sel.exclude, v)
	for _, it := range sel.items {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		fmt.Fprintf(h, "item %d %q %s\n", it.index, it.base, fileType(it.st.Mode))
		if err := wk.walkItem(sr, it, it.base); err != nil {
			return "", err
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// String is the canonical text of the chmod value, "" for none.
func (c *chmod) String() string {
	if c == nil {
		return ""
	}
	if c.octal {
		return fmt.Sprintf("%04o", c.bits)
	}
	return c.text
}

// hasher is the visitor that Checksum walks the sources with.
type hasher struct {
	h         hash.Hash
	ownership bool
	buf       []byte
}

func (v *hasher) meta(kind string, n *node) {
	fmt.Fprintf(v.h, "%s %q %04o", kind, n.rel, n.st.Mode&0o7777)
	if v.ownership {
		fmt.Fprintf(v.h, " %d:%d", n.st.Uid, n.st.Gid)
	}
	for _, x := range n.xattrs {
		fmt.Fprintf(v.h, " xattr %q %x", x.name, x.value)
	}
}

func (v *hasher) enterDir(n *node) error {
	if n.rel == "" {
		// Only the times of an item's directory reach the destination.
		_, err := io.WriteString(v.h, "root\n")
		return err
	}
	v.meta("dir", n)
	_, err := io.WriteString(v.h, "\n")
	return err
}

func (v *hasher) leaveDir(*node) error {
	_, err := io.WriteString(v.h, "end\n")
	return err
}

func (v *hasher) leaf(n *node) error {
	v.meta(fileType(n.st.Mode), n)
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if n.linkOf != "" {
			fmt.Fprintf(v.h, " link %q\n", n.linkOf)
			return nil
		}
		c := sha256.New()
		size, err := io.CopyBuffer(c, n.file, v.buf)
		if err != nil {
			return fmt.Errorf("read %s: %w", n.file.Name(), err)
		}
		fmt.Fprintf(v.h, " size %d sha256 %x\n", size, c.Sum(nil))
	case unix.S_IFLNK:
		fmt.Fprintf(v.h, " target %q\n", n.target)
	case unix.S_IFCHR, unix.S_IFBLK:
		fmt.Fprintf(v.h, " rdev %d:%d\n", unix.Major(n.st.Rdev), unix.Minor(n.st.Rdev))
	default:
		_, err := io.WriteString(v.h, "\n")
		return err
	}
	return nil
}

// Package treetest describes directory trees for tests: every entry below a
// root as one comparable line of type, mode, owner, size, content hash,
// link target, device, hard-link group, xattrs and mtime (whole seconds, as
// layer tars keep them).
package treetest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"builder/snapshot/internal/fsutil"
)

// Dump describes every entry below root (root itself excluded), keyed by
// slash-separated path relative to root. Overlay whiteouts (0/0 character
// devices) and opaque markers show up as such, so Dump also describes an
// overlay upper directory.
func Dump(root string) (map[string]string, error) {
	out := map[string]string{}
	firstOf := map[[2]uint64]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "mode=%o uid=%d gid=%d", st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			sum, err := hashFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " size=%d sha=%s", st.Size, sum)
			if st.Nlink > 1 {
				id := [2]uint64{st.Dev, st.Ino}
				if first, ok := firstOf[id]; ok {
					fmt.Fprintf(&b, " hardlink=%s", first)
				} else {
					firstOf[id] = rel
				}
			}
		case unix.S_IFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " link=%s", t)
		case unix.S_IFCHR, unix.S_IFBLK:
			fmt.Fprintf(&b, " dev=%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		xs, err := fsutil.Lxattrs(p)
		if err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(xs)) {
			fmt.Fprintf(&b, " xattr:%s=%q", k, xs[k])
		}
		if v, _ := fsutil.Lgetxattr(p, "trusted.overlay.opaque"); string(v) == "y" {
			b.WriteString(" opaque")
		}
		fmt.Fprintf(&b, " mtime=%d", st.Mtim.Sec)
		out[filepath.ToSlash(rel)] = b.String()
		return nil
	})
	return out, err
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// Compare returns a readable list of the differences between two dumps, or
// "" when they are equal.
func Compare(want, got map[string]string) string {
	var b strings.Builder
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !gok:
			fmt.Fprintf(&b, "missing %s: %s\n", k, w)
		case !wok:
			fmt.Fprintf(&b, "extra   %s: %s\n", k, g)
		case w != g:
			fmt.Fprintf(&b, "differs %s:\n  want %s\n  got  %s\n", k, w, g)
		}
	}
	return b.String()
}

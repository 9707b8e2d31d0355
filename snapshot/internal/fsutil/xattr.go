// Package fsutil holds small file-system helpers shared by the snapshotters
// and the layer archive code: extended attributes read without following
// symlinks, and the rule for which of them belong in a layer.
package fsutil

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Private reports whether the extended attribute key is overlayfs
// bookkeeping that never belongs in a layer (trusted.overlay.* and
// user.overlay.*).
func Private(key string) bool {
	return strings.HasPrefix(key, "trusted.overlay.") || strings.HasPrefix(key, "user.overlay.")
}

// Lxattrs returns the extended attributes of path itself (a symlink is not
// followed), leaving out the ones Private reports. A file system without
// xattr support yields an empty map.
func Lxattrs(path string) (map[string][]byte, error) {
	names, err := listxattr(path)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(names))
	for _, k := range names {
		if Private(k) {
			continue
		}
		v, err := getxattr(path, k)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

func listxattr(path string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(path, buf)
		switch {
		case errors.Is(err, unix.ERANGE):
			sz, err := unix.Llistxattr(path, nil)
			if err != nil {
				return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
			}
			buf = make([]byte, sz+64)
			continue
		case errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
		}
		var names []string
		for _, b := range bytes.Split(buf[:n], []byte{0}) {
			if len(b) > 0 {
				names = append(names, string(b))
			}
		}
		return names, nil
	}
}

func getxattr(path, key string) ([]byte, error) {
	buf := make([]byte, 128)
	for {
		n, err := unix.Lgetxattr(path, key, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Lgetxattr(path, key, nil)
			if err != nil {
				return nil, fmt.Errorf("get xattr %s of %s: %w", key, path, err)
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s of %s: %w", key, path, err)
		}
		return buf[:n], nil
	}
}

// Lgetxattr returns one extended attribute of path itself, or nil when it
// is not set.
func Lgetxattr(path, key string) ([]byte, error) {
	v, err := getxattr(path, key)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	return v, err
}

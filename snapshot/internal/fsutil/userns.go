package fsutil

import (
	"bytes"
	"os"
)

// InUserNamespace reports whether the process runs in a user namespace
// other than the initial one, as builder does for a non-root user: there
// overlayfs needs its userxattr option, and device nodes cannot be made.
// It reads /proc/self/uid_map each time; the answer never changes for a
// process.
func InUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := bytes.Fields(b)
	// The initial namespace maps every id to itself: "0 0 4294967295".
	return !(len(f) == 3 && string(f[0]) == "0" && string(f[1]) == "0" && string(f[2]) == "4294967295")
}

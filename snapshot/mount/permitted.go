package mount

import (
	"context"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Permitted reports whether this process may make private mount namespaces
// and mount in them: false in an unprivileged container (no CAP_SYS_ADMIN,
// or a seccomp profile that refuses unshare or mount). It probes once, by
// mounting a tmpfs in a throwaway namespace, and remembers the answer.
func Permitted() bool { return permitted() }

var permitted = sync.OnceValue(func() bool {
	dir, err := os.MkdirTemp("", "builder-probe-")
	if err != nil {
		return false
	}
	defer os.Remove(dir)
	err = InNamespace(context.Background(), func() error {
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4k"); err != nil {
			return err
		}
		return unix.Unmount(dir, unix.MNT_DETACH)
	})
	return err == nil
})

package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"builder/build/sandbox/seccomp"
)

// lookPath finds the executable file in the directories of pathEnv, or
// checks it when it names a path, as exec.LookPath does but with the
// command's PATH and working directory rather than the init's. Errors name
// the file the way runc does.
func lookPath(file, pathEnv, cwd string) (string, error) {
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(cwd, p)
	}
	if strings.Contains(file, "/") {
		if err := checkExecutable(abs(file)); err != nil {
			return "", fmt.Errorf("exec: %q: %w", file, err)
		}
		return file, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if checkExecutable(abs(p)) == nil {
			return abs(p), nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}

// checkExecutable reports why path cannot be executed, if it cannot.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return &fs.PathError{Op: "exec", Path: path, Err: unix.EISDIR}
	}
	if fi.Mode()&0o111 == 0 {
		return &fs.PathError{Op: "exec", Path: path, Err: unix.EACCES}
	}
	return nil
}

// getEnv returns the value of name in env; the last setting wins.
func getEnv(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// dropCapabilities removes every capability outside Docker's default set
// (seccomp.DefaultCapabilities, which RUN gets unless insecure) from
// the calling thread's bounding set and empties its inheritable set, so that
// a program it executes as root gets at most the default set. The thread's
// own effective set is unchanged: the init still needs CAP_SYS_ADMIN to tear
// down. With noChroot, CAP_SYS_CHROOT goes too, and so does CAP_MKNOD when
// the chroot-mode init has no mount namespace of its own: there the root
// cannot be made nodev (see nodevChrootRoot), so the command must not
// create a device node at all; an existing one can be opened only as far
// as a device cgroup allows. The caller must be locked to its thread.
func dropCapabilities(noChroot bool) error {
	keep := map[int]bool{}
	for _, c := range seccomp.DefaultCapabilities {
		keep[c] = true
	}
	if noChroot {
		delete(keep, unix.CAP_SYS_CHROOT)
		if os.Getenv(mountNSEnv) != "1" {
			delete(keep, unix.CAP_MKNOD)
		}
	}
	for c := 0; c < 64; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				break // past the kernel's last capability
			}
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("get capabilities: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("set capabilities: %w", err)
	}
	return nil
}

// forkHardened starts argv0 like syscall.ForkExec from a fresh OS thread
// that first drops capabilities to Docker's default set, sets no_new_privs
// and loads the seccomp filter, so that the command inherits all three while
// the init keeps its own privileges for teardown. The thread is discarded
// afterwards. For chroot isolation, CAP_SYS_CHROOT is dropped too and the
// filter refuses signals to other process groups (see seccomp.Install); the
// filter's listener, if any, is returned for serveSignals.
func forkHardened(argv0 string, argv []string, attr *syscall.ProcAttr, chroot bool, filters seccomp.Filters) (pid int, listener *os.File, err error) {
	type result struct {
		pid      int
		listener *os.File
		err      error
	}
	ch := make(chan result, 1)
	go func() {
		// No UnlockOSThread: the thread exits with the goroutine.
		runtime.LockOSThread()
		if err := dropCapabilities(chroot); err != nil {
			ch <- result{err: err}
			return
		}
		listener, err := seccomp.InstallFilters(filters)
		if err != nil {
			ch <- result{err: err}
			return
		}
		pid, err := syscall.ForkExec(argv0, argv, attr)
		if err != nil && listener != nil {
			listener.Close()
			listener = nil
		}
		ch <- result{pid, listener, err}
	}()
	r := <-ch
	return r.pid, r.listener, r.err
}

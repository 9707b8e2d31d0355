package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Probe says which isolation mode works on this machine: it starts a
// throwaway child in new mount and PID namespaces that mounts a tmpfs in its
// own namespace. It returns IsolationNamespaces when that works, else
// IsolationChroot with the reason, such as "mount namespaces are not
// permitted: EPERM". It leaves nothing behind. The answer cannot change
// while the process runs, so it is probed once and remembered (a probe cut
// short by ctx is not).
func Probe(ctx context.Context) (mode, reason string) {
	probed.Lock()
	defer probed.Unlock()
	if probed.mode == "" {
		mode, reason := probe(ctx)
		if ctx.Err() != nil {
			return mode, reason
		}
		probed.mode, probed.reason = mode, reason
	}
	return probed.mode, probed.reason
}

// probed remembers Probe's answer.
var probed struct {
	sync.Mutex
	mode, reason string
}

func probe(ctx context.Context) (mode, reason string) {
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{probeArg0}
	cmd.Env = []string{probeEnv + "=1", "GOMAXPROCS=1"}
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
	}
	err := cmd.Run()
	if err == nil {
		return IsolationNamespaces, ""
	}
	var errno syscall.Errno
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		msg := strings.TrimSpace(out.String())
		if msg == "" {
			msg = err.Error()
		}
		return IsolationChroot, msg
	case errors.As(err, &errno):
		return IsolationChroot, "mount namespaces are not permitted: " + errnoName(errno)
	}
	return IsolationChroot, fmt.Sprintf("mount namespaces are not available: %v", err)
}

// probeMain is the probe child: in its own mount namespace it makes the
// mounts private and mounts a tmpfs over "/", the one directory sure to
// exist; the namespace and the mount die with the child. It prints why it
// failed and returns the exit code.
func probeMain() int {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintf(os.Stderr, "mounts are not permitted: %s", errnoText(err))
		return 1
	}
	if err := unix.Mount("tmpfs", "/", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4k"); err != nil {
		fmt.Fprintf(os.Stderr, "tmpfs mounts are not permitted: %s", errnoText(err))
		return 1
	}
	return 0
}

func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errnoName(errno)
	}
	return err.Error()
}

// errnoName returns "EPERM" for EPERM, or the errno's text.
func errnoName(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return e.Error()
}

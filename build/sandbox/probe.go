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
// throwaway child that tries what namespace mode needs (probeMain): new
// mount, PID, UTS and IPC namespaces, a proc mount of the new PID
// namespace, a private tmpfs it pivots into and a hostname. It returns
// IsolationNamespaces when all of that works, else IsolationChroot with
// the reason, such as "new namespaces are not permitted: EPERM". It leaves
// nothing behind. The answer cannot change while the process runs, so it
// is probed once and remembered (a probe cut short by ctx is not).
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

// probeFlags are the namespaces of namespace mode (newConfig adds a network
// namespace only for Network "none").
const probeFlags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC

func probe(ctx context.Context) (mode, reason string) {
	msg, err := runProbe(ctx, probeFlags, "1")
	if err == nil {
		return IsolationNamespaces, ""
	}
	var errno syscall.Errno
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		if msg == "" {
			msg = err.Error()
		}
		return IsolationChroot, msg
	case errors.As(err, &errno):
		return IsolationChroot, "new namespaces are not permitted: " + errnoName(errno)
	}
	return IsolationChroot, fmt.Sprintf("new namespaces are not available: %v", err)
}

// ProbePIDNamespace reports whether a chroot-mode run gets a PID namespace
// of its own on this machine (see IsolationChroot): it starts a throwaway
// child in one, which exits at once.
func ProbePIDNamespace(ctx context.Context) bool {
	_, err := runProbe(ctx, unix.CLONE_NEWPID, "pid")
	return err == nil
}

// runProbe runs the probe child in new namespaces of flags, telling it
// what to try with the value of probeEnv, and returns its output and error.
func runProbe(ctx context.Context, flags uintptr, what string) (string, error) {
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{probeArg0}
	cmd.Env = []string{probeEnv + "=" + what, "GOMAXPROCS=1"}
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: flags,
		Pdeathsig:  syscall.SIGKILL,
	}
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// probeMain is the probe child. Told "1", it does in its own namespaces
// what the init of namespace mode does: it makes the mounts private,
// mounts the PID namespace's proc on /proc (sure to exist: the child was
// started through /proc/self/exe) while the host's is still fully visible,
// as the init does (in a user namespace, the kernel refuses a proc mount
// otherwise), mounts a tmpfs over it, pivots into that and sets the
// hostname; the namespaces and mounts die with the child.
// Told anything else, it only had to start. It prints why it failed and
// returns the exit code.
func probeMain() int {
	if os.Getenv(probeEnv) != "1" {
		return 0
	}
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "%s: %s", what, errnoText(err))
		return 1
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("mounts are not permitted", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fail("proc mounts are not permitted", err)
	}
	if err := unix.Mount("tmpfs", "/proc", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=16k,mode=755"); err != nil {
		return fail("tmpfs mounts are not permitted", err)
	}
	if err := unix.Chdir("/proc"); err != nil {
		return fail("enter the tmpfs", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fail("pivot_root is not permitted", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fail("detach the old root", err)
	}
	if err := unix.Sethostname([]byte(DefaultHostname)); err != nil {
		return fail("setting the hostname is not permitted", err)
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

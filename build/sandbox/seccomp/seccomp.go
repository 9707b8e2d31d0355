// Package seccomp builds and loads the seccomp filter of a RUN: Docker's
// default profile (moby/profiles/seccomp) as an allowlist in classic BPF,
// plus, for chroot isolation, rules that refuse signals to "all" and to
// process groups (see Install).
//
// The profile is evaluated at development time, for Docker's default
// capabilities (DefaultCapabilities), by the generator in
// internal/seccompgen, which writes the allowed system call numbers and
// their argument conditions for every ABI of amd64 and arm64 into
// seccomp_gen.go; a test regenerates the table and fails when it is stale
// against the pinned moby/profiles version. The binary therefore carries no
// JSON and needs no libseccomp, whose Go binding needs cgo (builder is built
// with CGO_ENABLED=0): that is why the small assembler here (bpf.go) is our
// own. What a RUN may call is fixed by the source, not by a file read at
// run time. The table becomes a program: a call the profile allows passes,
// clone3 fails with ENOSYS (so that libc falls back to clone, whose flags
// the filter can inspect), anything else fails with EPERM; a process of an
// architecture the filter does not know is killed. Chroot isolation adds
// deny rules in front (chroot.go), which namespace mode does not need:
// there the PID namespace confines every signal.
//
// seccomp_gen.go is generated and long (one line per system call and ABI);
// the hand-written files are short.
package seccomp

//go:generate go run ./internal/seccompgen/cmd/seccompgen -o seccomp_gen.go

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultCapabilities is Docker's default capability set, for which the
// table of seccomp_gen.go is evaluated: a process under the filter must
// hold no capability outside it (a test checks that the generator agrees).
var DefaultCapabilities = []int{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER,
	unix.CAP_MKNOD, unix.CAP_NET_RAW, unix.CAP_SETGID, unix.CAP_SETUID,
	unix.CAP_SETFCAP, unix.CAP_SETPCAP, unix.CAP_NET_BIND_SERVICE,
	unix.CAP_SYS_CHROOT, unix.CAP_KILL, unix.CAP_AUDIT_WRITE,
}

// Install sets no_new_privs and loads the default filter on the calling
// thread, with chrootSignalRules added when chrootSignals is set (chroot
// isolation); the processes it then starts inherit both. The caller must be locked to its
// thread, and the thread should not run other Go code afterwards (let its
// goroutine exit without unlocking). Where the architecture has no table,
// only no_new_privs is set. With chrootSignals it returns the filter's
// listener (close-on-exec), which the caller must serve: answer each
// notified kill(2) with a negative target (SECCOMP_IOCTL_NOTIF_RECV and
// _SEND), letting through only the command's own process group. It
// returns nil where the kernel cannot notify (before Linux 5.5, or with a
// listener already on the thread's filters): then the rules refuse instead.
func Install(chrootSignals bool) (listener *os.File, err error) {
	f, err := Compile(chrootSignals)
	if err != nil {
		if perr := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); perr != nil {
			return nil, fmt.Errorf("set no_new_privs: %w", perr)
		}
		return nil, err
	}
	return InstallFilters(f)
}

// kernelVersion returns the running kernel's major and minor version.
func kernelVersion() ([2]uint8, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return [2]uint8{}, fmt.Errorf("uname: %w", err)
	}
	return parseKernelRelease(unix.ByteSliceToString(u.Release[:]))
}

// parseKernelRelease reads "6.18.0-1-amd64" as {6, 18}.
func parseKernelRelease(release string) ([2]uint8, error) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return [2]uint8{}, fmt.Errorf("parse kernel release %q", release)
	}
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	ma, err1 := strconv.ParseUint(parts[0], 10, 8)
	mi, err2 := strconv.ParseUint(minor, 10, 8)
	if err1 != nil || err2 != nil {
		return [2]uint8{}, fmt.Errorf("parse kernel release %q", release)
	}
	return [2]uint8{uint8(ma), uint8(mi)}, nil
}

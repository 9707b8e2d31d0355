package sandbox

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp filter is a denylist in classic BPF, built here rather than
// with libseccomp (which needs cgo, and builder is built with CGO_ENABLED=0)
// or a third-party generator (the program is small enough to read). It
// refuses with EPERM the system calls that Docker's default profile
// (moby/profiles/seccomp) refuses to a container holding Docker's default
// capabilities: kernel modules, kexec, reboot, swap, clocks, keyrings,
// mount and the new mount API, pivot_root, namespaces (unshare, setns, and
// clone with namespace flags), bpf, perf_event_open, userfaultfd,
// open_by_handle_at, io_uring and the obsolete calls. clone3 gets ENOSYS,
// as in Docker, so that libc falls back to clone, whose flags the filter
// can inspect. Everything else is allowed: the capability set already
// limits what the allowed calls can do.

// secCompArch is one architecture the filter knows: its AUDIT_ARCH value,
// the denied system call numbers and those of clone and clone3.
type seccompArch struct {
	audit  uint32
	mask   uint32 // bits cleared from the number first (x32's 0x40000000)
	denied []uint32
	clone  uint32
	clone3 uint32
}

// nsCloneFlags are the clone flags that create namespaces; Docker's profile
// refuses clone with any of them to a container without CAP_SYS_ADMIN.
const nsCloneFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// Offsets in struct seccomp_data.
const (
	seccompNrOff   = 0
	seccompArchOff = 4
	seccompArg0Off = 16 // low 32 bits on little-endian machines
)

func bpfStmt(code uint16, k uint32) unix.SockFilter {
	return unix.SockFilter{Code: code, K: k}
}

func bpfJump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

const (
	retAllow  = unix.SECCOMP_RET_ALLOW
	retEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	retKill   = unix.SECCOMP_RET_KILL_PROCESS
)

// archBlock returns the filter instructions for one architecture: they load
// the system call number and return an action for it.
func archBlock(a seccompArch) []unix.SockFilter {
	p := []unix.SockFilter{bpfStmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompNrOff)}
	if a.mask != 0 {
		p = append(p, bpfStmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, ^a.mask))
	}
	for _, nr := range a.denied {
		p = append(p,
			bpfJump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, nr, 0, 1),
			bpfStmt(unix.BPF_RET|unix.BPF_K, retEPERM))
	}
	return append(p,
		bpfJump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, a.clone3, 0, 1),
		bpfStmt(unix.BPF_RET|unix.BPF_K, retENOSYS),
		bpfJump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, a.clone, 0, 3),
		bpfStmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompArg0Off),
		bpfJump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, nsCloneFlags, 0, 1),
		bpfStmt(unix.BPF_RET|unix.BPF_K, retEPERM),
		bpfStmt(unix.BPF_RET|unix.BPF_K, retAllow),
	)
}

// seccompProgram returns the whole filter for archs: dispatch on the
// architecture, then that architecture's block; an unknown architecture
// kills the process, as libseccomp's default does. It returns nil when
// archs is empty.
func seccompProgram(archs []seccompArch) []unix.SockFilter {
	if len(archs) == 0 {
		return nil
	}
	blocks := make([][]unix.SockFilter, len(archs))
	for i, a := range archs {
		blocks[i] = archBlock(a)
	}
	// Header: load arch; per arch "jeq audit, 0, 1; ja block"; ret kill.
	p := []unix.SockFilter{bpfStmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompArchOff)}
	headerLen := 1 + 2*len(archs) + 1
	start := headerLen
	for i, a := range archs {
		ja := len(p) + 1 // index of the ja instruction
		p = append(p,
			bpfJump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, a.audit, 0, 1),
			bpfStmt(unix.BPF_JMP|unix.BPF_JA, uint32(start-(ja+1))))
		start += len(blocks[i])
	}
	p = append(p, bpfStmt(unix.BPF_RET|unix.BPF_K, retKill))
	for _, b := range blocks {
		p = append(p, b...)
	}
	return p
}

// installSeccomp sets no_new_privs and loads the default filter on the
// calling thread; the processes it then starts inherit both. The caller
// must be locked to its thread, and the thread should not run other Go
// code afterwards (let its goroutine exit without unlocking). Where the
// architecture has no table, only no_new_privs is set.
func installSeccomp() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	prog := seccompProgram(seccompArchs)
	if prog == nil {
		return nil
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("load seccomp filter: %w", errno)
	}
	return nil
}

// forkHardened starts argv0 like syscall.ForkExec from a fresh OS thread
// that first drops capabilities to Docker's default set, sets no_new_privs
// and loads the seccomp filter, so that the command inherits all three while
// the init keeps its own privileges for teardown. The thread is discarded
// afterwards. With noChroot, CAP_SYS_CHROOT is dropped too.
func forkHardened(argv0 string, argv []string, attr *syscall.ProcAttr, noChroot bool) (int, error) {
	type result struct {
		pid int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// No UnlockOSThread: the thread exits with the goroutine.
		runtime.LockOSThread()
		if err := dropCapabilities(noChroot); err != nil {
			ch <- result{err: err}
			return
		}
		if err := installSeccomp(); err != nil {
			ch <- result{err: err}
			return
		}
		pid, err := syscall.ForkExec(argv0, argv, attr)
		ch <- result{pid, err}
	}()
	r := <-ch
	return r.pid, r.err
}

package sandbox

import (
	"errors"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompNotif is struct seccomp_notif: one system call a filter handed to
// its listener, by the calling thread's pid (in the listener's PID
// namespace) and its seccomp_data.
type seccompNotif struct {
	id    uint64
	pid   uint32
	flags uint32
	nr    int32
	arch  uint32
	ip    uint64
	args  [6]uint64
}

// seccompNotifResp is struct seccomp_notif_resp: the answer to the
// notification id, either an error (a negative errno) or, with
// SECCOMP_USER_NOTIF_FLAG_CONTINUE, "run the call as made".
type seccompNotifResp struct {
	id    uint64
	val   int64
	error int32
	flags uint32
}

// serveSignals answers, until stop is called, the kill(2) calls with a
// negative target that the chroot-mode filter hands to listener
// (chrootSignalRules): kill(-pgid) of the command's own process group,
// pgid, runs while the command (its leader) has not been reaped, that is
// while exited is false; any other group and -1 fail with EPERM. Once the
// command is reaped its pid, and so its group id, may name a host process
// group, if none of the run's processes is left in the group. The
// arguments are values, not pointers, so letting the call continue cannot
// be raced. A nil listener needs no serving. stop closes the listener; a
// process of the run still waiting for an answer then gets ENOSYS, but by
// then the init has killed them all. stop must be called exactly once.
func serveSignals(listener *os.File, pgid int, exited *atomic.Bool) (stop func()) {
	if listener == nil {
		return func() {}
	}
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		// Without a way to stop a server, answer nothing: every caller
		// fails with ENOSYS once the listener is closed, so nothing is
		// let through.
		return func() { listener.Close() }
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fd := int(listener.Fd())
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(pipe[0]), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, -1); err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			if fds[1].Revents != 0 || fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				return
			}
			var req seccompNotif // the kernel wants it zeroed
			if err := ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&req)); err != nil {
				if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) {
					continue // the caller died meanwhile
				}
				return
			}
			resp := seccompNotifResp{id: req.id, error: -int32(unix.EPERM)}
			if target := int32(uint32(req.args[0])); pgid > 0 && target == -int32(pgid) && !exited.Load() {
				resp.error, resp.flags = 0, unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
			}
			_ = ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp))
		}
	}()
	return func() {
		unix.Close(pipe[1])
		<-done
		unix.Close(pipe[0])
		listener.Close()
	}
}

// ioctlPtr is ioctl(2) with a pointer argument.
func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

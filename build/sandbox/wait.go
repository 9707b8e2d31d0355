package sandbox

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// wait reaps every process of the sandbox until the command pid exits,
// forwarding signals to it meanwhile; then it kills all that is left and
// reaps it too. It returns the command's wait status.
func (s *sandbox) wait(pid int, sigs chan os.Signal) unix.WaitStatus {
	// A pidfd cannot hit a recycled pid; kill(2) is the fallback.
	pidfd, pidfdErr := unix.PidfdOpen(pid, 0)
	var mu sync.Mutex
	done := false
	stop := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		for {
			select {
			case sig := <-sigs:
				mu.Lock()
				if sig == unix.SIGUSR2 {
					// The builder cancels a chroot-mode run: no PID
					// namespace takes the tree down, so the init does.
					if !done && s.cfg.Chroot {
						s.killChildren()
					}
				} else if !done {
					if pidfdErr == nil {
						_ = unix.PidfdSendSignal(pidfd, sig.(unix.Signal), nil, 0)
					} else {
						_ = unix.Kill(pid, sig.(unix.Signal))
					}
				}
				mu.Unlock()
			case <-stop:
				return
			}
		}
	}()

	var status unix.WaitStatus
	exited := false
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			break // ECHILD: nothing left
		}
		if wpid == pid {
			s.exited.Store(true)
			status = ws
			mu.Lock()
			done = true
			mu.Unlock()
			if !s.cfg.Chroot || s.pidNS {
				// From PID 1, -1 means every other process of the namespace.
				_ = unix.Kill(-1, unix.SIGKILL)
			}
		}
		if wpid == pid {
			exited = true
		}
		if exited && s.cfg.Chroot && !s.pidNS {
			// Orphans re-parent to the init (a subreaper) before their
			// dead parent can be reaped, so killing the children after
			// every reap until none is left takes down the whole tree.
			s.killChildren()
		}
	}
	if s.procFD > 0 {
		unix.Close(s.procFD)
	}
	close(stop)
	<-forwarded
	if pidfdErr == nil {
		unix.Close(pidfd)
	}
	return status
}

// killChildren sends SIGKILL to every child of the init, found through the
// host's /proc (chroot mode only); in a PID namespace of its own, to every
// other process of the namespace.
func (s *sandbox) killChildren() {
	if s.pidNS {
		_ = unix.Kill(-1, unix.SIGKILL)
		return
	}
	if s.procFD <= 0 {
		return
	}
	fd, err := unix.Openat(s.procFD, ".", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	dir := os.NewFile(uintptr(fd), "/proc")
	defer dir.Close()
	names, _ := dir.Readdirnames(-1)
	self := os.Getpid()
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if ppidOf(s.procFD, n) == self {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// ppidOf reads the parent pid from /proc/PID/stat, or returns -1.
func ppidOf(procFD int, pid string) int {
	fd, err := unix.Openat(procFD, pid+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	var buf [512]byte
	n, _ := unix.Read(fd, buf[:])
	unix.Close(fd)
	if n <= 0 {
		return -1
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	stat := string(buf[:n])
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 2 {
		return -1
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return ppid
}

// teardown removes the stubs, first detaching the mounts on or under them.
// Other mounts are left to die with the mount namespace. It is safe after a
// partial setup.
func (s *sandbox) teardown() {
	if len(s.stubs.created) == 0 {
		return
	}
	for _, m := range slices.Backward(s.mounts) {
		if slices.ContainsFunc(s.stubs.created, func(c string) bool {
			return m == c || strings.HasPrefix(m, c+"/")
		}) {
			s.stubs.unmount(m)
		}
	}
	s.stubs.cleanup()
}

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
// negative target that the chroot-mode filter hands to listener (see
// seccomp.Install): kill(-pgid) of the command's own process group, pgid,
// runs while the command (its leader) has not been reaped, that is
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

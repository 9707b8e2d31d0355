package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// setup builds the sandbox and starts the command, returning its pid.
func (s *sandbox) setup() (int, error) {
	cfg := s.cfg
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return 0, fmt.Errorf("make mounts private: %w", err)
	}
	if err := s.setupScratch(); err != nil {
		return 0, err
	}
	for _, m := range cfg.Root {
		if err := mountRoot(m, s.rootDir, s.layer, !cfg.Insecure); err != nil {
			return 0, err
		}
	}
	// The working directory is part of the result, as in BuildKit: it is
	// created before any mount and never removed.
	cwd, err := securejoin.SecureJoin(s.rootDir, cfg.Cwd)
	if err != nil {
		return 0, fmt.Errorf("resolve working directory: %w", err)
	}
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return 0, fmt.Errorf("create working directory: %w", err)
	}
	for _, step := range []func() error{s.mountProc, s.mountDev, s.mountSys, s.maskPaths, s.mountEtc, s.mountExtra} {
		if err := step(); err != nil {
			return 0, err
		}
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return 0, fmt.Errorf("set hostname: %w", err)
	}
	if cfg.NewNet {
		if err := loopbackUp(); err != nil {
			return 0, err
		}
	}
	if err := s.pivot(); err != nil {
		return 0, err
	}
	return s.start()
}

// setupChroot builds a chroot-mode sandbox (see IsolationChroot) and starts
// the command, returning its pid. The init has no namespace of its own
// except, where permitted, a PID and a mount namespace (and a network
// namespace for Network "none"); only with the mount namespace does the
// command get /proc, /dev, /sys, /etc/hosts, /etc/resolv.conf and RUN
// --mount mounts.
func (s *sandbox) setupChroot() (int, error) {
	cfg := s.cfg
	s.pidNS = os.Getenv(pidNSEnv) == "1"
	if !s.pidNS {
		// Orphans of the command become the init's children, so that it
		// can reap and, at the end, kill them all. (As PID 1 of its own
		// namespace, the init gets them anyway and kills them with -1.)
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return 0, fmt.Errorf("become subreaper: %w", err)
		}
		// The host's /proc stays reachable for finding those children
		// after the chroot; the fd is close-on-exec and the init is not
		// dumpable.
		procFD, err := unix.Open("/proc", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("open /proc: %w", err)
		}
		s.procFD = procFD
	}
	cwd, err := securejoin.SecureJoin(s.rootDir, cfg.Cwd)
	if err != nil {
		return 0, fmt.Errorf("resolve working directory: %w", err)
	}
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return 0, fmt.Errorf("create working directory: %w", err)
	}
	if os.Getenv(mountNSEnv) == "1" {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return 0, fmt.Errorf("make mounts private: %w", err)
		}
		if err := s.nodevChrootRoot(); err != nil {
			return 0, err
		}
		if err := unix.Mount("tmpfs", cfg.Scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=700"); err != nil {
			return 0, fmt.Errorf("mount scratch tmpfs: %w", err)
		}
		if err := os.WriteFile(s.hostsFile, cfg.Hosts, 0o644); err != nil {
			return 0, fmt.Errorf("write hosts: %w", err)
		}
		if err := os.WriteFile(s.resolvFile, cfg.ResolvConf, 0o644); err != nil {
			return 0, fmt.Errorf("write resolv.conf: %w", err)
		}
		for _, step := range []func() error{s.mountChrootProc, s.mountDev, s.mountSys, s.maskPaths, s.mountEtc, s.mountExtra} {
			if err := step(); err != nil {
				return 0, err
			}
		}
	} else if len(cfg.Mounts) > 0 {
		return 0, errors.New("RUN --mount needs mounts, which this machine does not permit (chroot isolation)")
	}
	if cfg.NewNet {
		if err := loopbackUp(); err != nil {
			return 0, err
		}
	}
	if err := unix.Chdir(s.rootDir); err != nil {
		return 0, fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return 0, fmt.Errorf("chroot: %w", err)
	}
	s.stubs.root = "/"
	if err := unix.Chdir("/"); err != nil {
		return 0, fmt.Errorf("chroot: %w", err)
	}
	return s.start()
}

// nodevChrootRoot binds the chroot-mode root directory onto itself,
// recursively and nodev, unless the run is insecure: the command keeps
// CAP_MKNOD, so it may create a device node (or find one in the image), but
// cannot open it. It needs the init's own mount namespace; without one,
// dropCapabilities takes CAP_MKNOD from the command instead.
func (s *sandbox) nodevChrootRoot() error {
	if s.cfg.Insecure {
		return nil
	}
	if err := bindMount(s.rootDir, s.rootDir, unix.MS_BIND|unix.MS_REC|unix.MS_NODEV); err != nil {
		return fmt.Errorf("make root nodev: %w", err)
	}
	return nil
}

// setupScratch mounts a tmpfs on the scratch directory, visible only in
// this mount namespace, and fills it with the root mountpoint, the hosts and
// resolv.conf files and, for an overlay root, a layer of mountpoint stubs.
// After pivot_root it is detached with the old root; the bind mounts made
// from it stay.
func (s *sandbox) setupScratch() error {
	if err := unix.Mount("tmpfs", s.cfg.Scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=700"); err != nil {
		return fmt.Errorf("mount scratch tmpfs: %w", err)
	}
	if err := os.Mkdir(s.rootDir, 0o755); err != nil {
		return fmt.Errorf("create root mountpoint: %w", err)
	}
	if err := os.WriteFile(s.hostsFile, s.cfg.Hosts, 0o644); err != nil {
		return fmt.Errorf("write hosts: %w", err)
	}
	if err := os.WriteFile(s.resolvFile, s.cfg.ResolvConf, 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	// Overlay options cannot carry a path with a separator in it.
	if len(s.cfg.Root) == 1 && s.cfg.Root[0].Type == "overlay" && !strings.ContainsAny(s.cfg.Scratch, ":,") {
		return s.makeStubLayer(filepath.Join(s.cfg.Scratch, "layer"))
	}
	return nil
}

// makeStubLayer creates the overlay layer that goes under all the others and
// holds the mountpoints the sandbox needs, so that on an overlay root they
// exist without writing to the upper dir. A lower layer never changes the
// metadata of a directory an upper layer has; where an upper layer hides a
// stub (a symlink, a whiteout, an opaque directory), ensure creates it in
// the root as for other roots.
func (s *sandbox) makeStubLayer(layer string) error {
	type stub struct {
		path string
		dir  bool
	}
	stubs := []stub{{"/proc", true}, {"/dev", true}, {"/sys", true}, {"/etc/hosts", false}, {"/etc/resolv.conf", false}}
	for i, m := range s.cfg.Mounts {
		dir := true
		if m.Type == "bind" {
			if src, err := s.source(i); err == nil && !isDirFD(int(src.Fd())) {
				dir = false
			}
		}
		stubs = append(stubs, stub{filepath.Clean(m.Target), dir})
	}
	for _, st := range stubs {
		p := filepath.Join(layer, st.path)
		parent := p
		if !st.dir {
			parent = filepath.Dir(p)
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("create stub layer: %w", err)
		}
		if st.dir {
			continue
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("create stub layer: %w", err)
		}
		f.Close()
	}
	s.layer = layer
	return nil
}

// loopbackUp brings lo up in the new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// pivot makes the mounted root the process's root and detaches the old one.
func (s *sandbox) pivot() error {
	if err := unix.Chdir(s.rootDir); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	s.stubs.root = "/"
	// The old root now sits on top of the new one, at ".".
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	return nil
}

// start resolves the user and the executable inside the new root and starts
// the command with the user's credentials, the spec's environment and
// working directory, and fds 0, 1 and 2 only; unless the run is insecure,
// with Docker's default capabilities, no_new_privs and the seccomp filter
// (see forkHardened).
func (s *sandbox) start() (int, error) {
	cfg := s.cfg
	if err := awaitNetwork(cfg.WaitNet); err != nil {
		return 0, err
	}
	u, err := resolveUser(cfg.User, "/etc/passwd", "/etc/group")
	if err != nil {
		return 0, err
	}
	env := cfg.Env
	if !hasEnv(env, "HOME") {
		env = append(env[:len(env):len(env)], "HOME="+u.Home)
	}
	argv0, err := lookPath(cfg.Args[0], getEnv(env, "PATH"), cfg.Cwd)
	if err != nil {
		return 0, err
	}
	// The init enters the working directory itself and checks that it is
	// inside the root: through /proc/self/fd/N a path can reach a directory
	// open outside it (CVE-2024-21626). The command inherits it.
	if err := unix.Chdir(cfg.Cwd); err != nil {
		return 0, fmt.Errorf("enter working directory %s: %w", cfg.Cwd, err)
	}
	if _, err := unix.Getwd(); err != nil {
		return 0, fmt.Errorf("enter working directory %s: outside the root filesystem", cfg.Cwd)
	}
	unix.Umask(0o022)
	// Resource limits are per process and inherited across fork and exec.
	// syscall.Setrlimit (not unix's) also stops ForkExec from restoring
	// the soft RLIMIT_NOFILE Go raised at startup.
	for _, l := range cfg.Rlimits {
		if err := syscall.Setrlimit(l.Resource, &syscall.Rlimit{Cur: l.Soft, Max: l.Hard}); err != nil {
			return 0, fmt.Errorf("set ulimit %s=%d:%d: %w", l.Name, int64(l.Soft), int64(l.Hard), err)
		}
	}
	// The command leads a session and a process group of its own, apart
	// from the init's, so that kill(0) and job control reach its
	// processes only.
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups},
			Setsid:     true,
		},
	}
	// An insecure run keeps every capability, may gain privileges through
	// setuid files and has no seccomp filter.
	var pid int
	if cfg.Insecure {
		pid, err = syscall.ForkExec(argv0, cfg.Args, attr)
	} else {
		// In a chroot, CAP_SYS_CHROOT would let root climb out of it.
		pid, s.signalListener, err = forkHardened(argv0, cfg.Args, attr, cfg.Chroot, cfg.Seccomp)
	}
	if err != nil {
		return 0, fmt.Errorf("exec %s: %w", cfg.Args[0], err)
	}
	return pid, nil
}

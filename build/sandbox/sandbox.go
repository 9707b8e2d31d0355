// Package sandbox runs one command of a Dockerfile RUN instruction in a
// namespaced sandbox of its own, without runc.
//
// Run re-executes the current binary (/proc/self/exe) as a tiny init process
// in new mount, PID, UTS and IPC namespaces (and a new network namespace for
// Network "none" and "private"; see package nat for the NAT of the
// latter). The init mounts the root filesystem inside its own mount
// namespace, so every mount it makes vanishes with the namespace however the
// builder dies; it pivots into the root, starts the command as its child,
// reaps zombies, forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT, and, once the command
// exits, kills whatever the command left behind. Unless Spec.Insecure, the
// command runs with Docker's default capabilities, no_new_privs, a seccomp
// filter denying what Docker's default profile denies (package seccomp),
// Docker's masked and read-only /proc and /sys paths, and no device but the
// standard ones of its /dev (nodev mounts and, where cgroups allow, a device
// allowlist; see package cgroup).
//
// Every path that build input can influence (a RUN --mount source inside
// its root, every mountpoint inside the root filesystem) is resolved once,
// inside its root, to a file descriptor (openat2 with RESOLVE_IN_ROOT, or a
// walk one component at a time on descriptors), and mounted through it with
// open_tree, fsopen/fsmount, mount_setattr and move_mount (Linux 5.12 or
// later); no path is looked up again after a check, so a concurrent rename
// (a parallel build sharing a cache mount) cannot redirect a mount to the
// host. Every RUN --mount mount is nosuid and nodev.
//
// A RUN that changes nothing leaves no change in the snapshot. On an overlay
// root, the mountpoints the image lacks (/proc, /dev, /sys, /etc/hosts,
// /etc/resolv.conf, --mount targets) come from an extra lowest layer on a
// private tmpfs, so nothing is written for them. Where that layer cannot
// provide one (a symlink or whiteout above it) and on bind roots, the init
// creates it and removes it after the run, restoring its parent's times;
// overlay directories copied up only to hold such a mountpoint are removed
// from the upper dir once the overlay is gone.
//
// Every binary that calls Run must call Reexec first thing in main (and in
// TestMain for tests).
//
// The package is the init and its protocol with the builder (~3,100 lines);
// the jobs that stand alone are rooms of their own (seccomp, cgroup, nat).
// What is left shares the init's state across setup, mounts and reaping,
// split into files by job.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"builder/build/sandbox/cgroup"
	"builder/build/sandbox/nat"
	"builder/snapshot"
)

// DefaultPath is the PATH a command gets when Spec.Env has none, as in Docker.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DefaultShmSize is the size of /dev/shm when Spec.ShmSize is 0, as in
// Docker.
const DefaultShmSize = 64 << 20

// HostEntry is one line of /etc/hosts: a name and its address.
type HostEntry struct {
	Host string
	IP   string
}

// Rlimit is one resource limit of the command (setrlimit(2)): Resource is
// a unix.RLIMIT_* constant.
type Rlimit struct {
	Name     string `json:"name"` // e.g. "nofile", for errors
	Resource int    `json:"resource"`
	Soft     uint64 `json:"soft"`
	Hard     uint64 `json:"hard"`
}

// DefaultHostname is the hostname a command sees when Spec.Hostname is empty.
const DefaultHostname = "builder"

// Spec describes one command to run in a sandbox.
type Spec struct {
	// Root holds the mounts of the root filesystem, as returned by
	// snapshot.Snapshotter.Prepare: usually one "overlay" or "bind" mount.
	// They are mounted in order onto one directory, inside the sandbox's
	// mount namespace only.
	Root []snapshot.Mount
	// Args is the argv of the command, already shell-wrapped by the caller
	// (e.g. ["/bin/sh", "-c", "echo hi"]). Args[0] without a slash is looked
	// up in the PATH of Env inside the root filesystem.
	Args []string
	// Env is the full environment of the command. PATH defaults to
	// DefaultPath and HOME to the user's home directory from /etc/passwd
	// (or "/"), as runc does; nothing else is added.
	Env []string
	// Cwd is the absolute working directory; "" means "/". It is created
	// (mode 0755, owned by root) if missing and kept afterwards.
	Cwd string
	// User is "", "name", "uid", "uid:gid", "name:group" or "uid:group",
	// resolved in the root filesystem's /etc/passwd and /etc/group.
	// Supplementary groups come from /etc/group when no group is given.
	User string
	// Hostname is the UTS hostname; "" means DefaultHostname.
	Hostname string
	// Network is "host" (the default, also for ""), "none" (a new network
	// namespace with only lo, up) or "private" (a new network namespace
	// whose outbound traffic goes through NAT, which cannot reach the
	// host's loopback; see package nat).
	Network string
	// NAT is the userspace NAT of a private network (see nat.Find); it is
	// started for the run and stopped after it.
	NAT nat.NAT
	// Stdout and Stderr receive the command's output live; nil discards it.
	// Stdin is always /dev/null.
	Stdout, Stderr io.Writer
	// Hosts is the content of /etc/hosts during the run; nil means a
	// localhost file naming Hostname.
	Hosts []byte
	// ExtraHosts are added to /etc/hosts after Hosts (--add-host), one
	// line each, in order.
	ExtraHosts []HostEntry
	// Rlimits are set on the command's process (--ulimit), by the init
	// right before it starts the command; raising a hard limit needs
	// CAP_SYS_RESOURCE.
	Rlimits []Rlimit
	// ShmSize is the size of the /dev/shm tmpfs in bytes; 0 means
	// DefaultShmSize.
	ShmSize int64
	// ResolvConf is the content of /etc/resolv.conf during the run; nil
	// means the host's /etc/resolv.conf, or for a private network one that
	// names the NAT's DNS forwarder (with the host's search and options).
	ResolvConf []byte
	// Mounts are extra mounts for RUN --mount, applied after the root
	// filesystem, the shallowest target first (the order is otherwise kept).
	Mounts []Mount
	// TempDir is where Run keeps the directory "builder-sandbox", created
	// once (mode 0700) and shared by all runs: each init mounts a private
	// tmpfs on it, in its own mount namespace, for the run's scratch files
	// and the root mountpoint. "" means os.TempDir(). Nothing is ever
	// written to it on disk.
	TempDir string
	// Insecure keeps every capability, leaves /proc and /sys unmasked and
	// allows every device, as RUN --security=insecure asks (BuildKit's
	// insecure mode allows all devices too). By default the command gets
	// Docker's default capability set and Docker's masked and read-only
	// paths, and can open only the standard devices of its /dev: the root
	// filesystem and /dev itself are nodev, and, where cgroups allow, the
	// run's cgroup has a device allowlist (see package cgroup).
	Insecure bool
	// Isolation is IsolationNamespaces (the default, also for "") or
	// IsolationChroot; see those constants and Probe.
	Isolation string
	// Limits bound the memory, CPU time and process count of the run's
	// process tree through a cgroup of its own, created for the run and
	// removed after it.
	Limits cgroup.Limits
	// Cgroups is what cgroup.Probe found; nil makes Run probe. Run fails
	// when a limit has no usable controller: the caller decides whether to
	// warn and drop the limit instead. A missing device allowlist is no
	// error: nodev mounts alone then keep the command off device nodes.
	Cgroups *cgroup.Support

	// noPIDNamespace makes a chroot-mode run go without a PID namespace
	// even where one is permitted, as on machines that refuse it; for
	// tests only.
	noPIDNamespace bool
}

// The isolation modes of Spec.Isolation.
const (
	// IsolationNamespaces runs the command in new mount, PID, UTS and IPC
	// namespaces after pivot_root into the root filesystem.
	IsolationNamespaces = "namespaces"
	// IsolationChroot is for machines that refuse new namespaces and
	// mounts (unprivileged Kubernetes pods, CI containers): the command
	// runs chrooted into the root directory, which must be one bind mount
	// (the naive snapshotter's), in its own session, with no UTS or IPC
	// namespace, and a PID and a mount namespace only where the machine
	// permits them. It still gets Docker's default capabilities minus
	// CAP_SYS_CHROOT, no_new_privs, the seccomp filter (plus rules that
	// refuse signals to -1 and to process groups: see seccomp.Install) and a
	// clean environment and fd table. /proc, /dev, /sys, /etc/hosts and
	// /etc/resolv.conf are mounted (in the init's mount namespace) only
	// where that is permitted, and absent otherwise. With a PID namespace
	// the command sees and reaches only its own processes, and /proc is
	// the namespace's. Without one it shares the host's processes: it can
	// signal any of them by pid (a filter cannot tell a host pid from its
	// own); /proc is then left out, so that their command lines and
	// environments stay unreadable; the init tracks and kills the
	// command's descendants as a child subreaper. Either way this mode is
	// not a security boundary: the command runs as the host's root (with
	// Docker's default capabilities) in the host's IPC and UTS namespaces
	// and, for Network "host", its network.
	IsolationChroot = "chroot"
)

// Mount is one extra mount of a RUN --mount. Whatever build input can
// change is resolved inside its root by file descriptor, once, and mounted
// through that descriptor: the source inside Root, the target inside the
// root filesystem. A symlink or ".." can never lead out of either, even
// when a concurrent build or writer renames directories meanwhile.
//
// It is not a snapshot.Mount, which says how to mount a snapshot (trusted
// overlay or bind options, made by the snapshotter): a Mount's source and
// target come from the Dockerfile, so it carries a root to resolve them in.
type Mount struct {
	// Type is "bind" (a file or directory of a host directory) or "tmpfs".
	Type string
	// Root is the absolute host path of the directory a bind's source is
	// in, trusted as it is (the caller made it or was given it); unused
	// for tmpfs.
	Root string
	// Source is the bind's file or directory inside Root: "" for Root
	// itself. It is resolved as if Root were "/": ".." stops at Root,
	// absolute symlinks are relative to it, and /proc magic links are
	// refused.
	Source string
	// Target is the absolute path inside the sandbox, resolved in the root
	// filesystem the same way. A missing target is created for the run and
	// removed afterwards if still empty. Every extra mount is nosuid and
	// nodev.
	Target string
	// ReadOnly mounts the target read-only (recursively for binds).
	ReadOnly bool
	// Options are mount(8) words: flags such as "nosuid", "nodev",
	// "noexec", "bind" (non-recursive bind), and, for tmpfs, data such as
	// "size=64m" or "mode=1777".
	Options []string
}

// SetupError is a sandbox the init could not set up: the command did not
// run. It comes from the init process as text and an errno, and unwraps
// to the errno, so errors.Is(err, fs.ErrNotExist) or unix.ENOSPC still
// tells the class of the failure.
type SetupError struct {
	Msg   string
	Errno syscall.Errno // 0 when the failure had none
}

func (e *SetupError) Error() string { return e.Msg }

// Unwrap returns the errno, or nil when there is none.
func (e *SetupError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// ExitError reports a command that exited non-zero or was killed by a
// signal.
type ExitError struct {
	// Code is the exit status, or 128+Signal when Signal is not zero.
	Code int
	// Signal is the signal that killed the command, or zero.
	Signal syscall.Signal
	// OOMKilled is set when the kernel killed a process of the run because
	// the run exceeded MemoryLimit (Spec.Limits.Memory).
	OOMKilled   bool
	MemoryLimit int64
}

// Error returns "exit code: N", "killed by signal N" or, for a run the
// kernel killed for exceeding its memory limit, "out of memory: ...".
func (e *ExitError) Error() string {
	if e.OOMKilled {
		return fmt.Sprintf("out of memory: killed by the kernel for exceeding the memory limit of %s (exit code %d)",
			formatBytes(e.MemoryLimit), e.Code)
	}
	if e.Signal != 0 {
		return fmt.Sprintf("killed by signal %d", int(e.Signal))
	}
	return fmt.Sprintf("exit code: %d", e.Code)
}

// Run runs spec.Args in a new sandbox and waits for it to finish. It returns
// nil when the command exits 0, an *ExitError when it exits non-zero or is
// killed, and another error when the sandbox cannot be set up (unknown user,
// missing binary, failed mount...). When ctx is cancelled, the whole sandbox
// is killed and Run returns ctx.Err() wrapped. Nothing Run mounts is ever
// visible outside the sandbox, and nothing outlives it. Run is safe for
// concurrent use; each call needs its own snapshot.
func Run(ctx context.Context, spec Spec) (err error) {
	cfg, err := newConfig(spec)
	if err != nil {
		return err
	}
	if !cfg.Insecure {
		if cfg.Seccomp, err = filtersFor(cfg.Chroot); err != nil {
			return err
		}
	}
	if cfg.Scratch, err = scratchDir(spec.TempDir); err != nil {
		return err
	}
	var cg *cgroup.Group
	// An insecure run may use every device, as BuildKit's insecure mode
	// (docker run --privileged) allows.
	devices := !spec.Insecure
	if !spec.Limits.IsZero() || devices {
		sup := spec.Cgroups
		if sup == nil {
			p := cgroup.Probe()
			sup = &p
		}
		if !sup.Supports(spec.Limits) {
			return fmt.Errorf("sandbox: resource limits need cgroups: %s", sup.Reason)
		}
		if cg, err = cgroup.Create(*sup, spec.Limits, devices); err != nil {
			return err
		}
		// Removal waits for the tree to die, also after a cancelled run.
		defer func() {
			if rerr := cg.Remove(context.WithoutCancel(ctx)); rerr != nil && err == nil {
				err = rerr
			}
		}()
		cfg.Cgroups = cg.Dirs()
	}
	res, err := runInit(ctx, cfg, spec.Stdout, spec.Stderr)
	if err != nil {
		if ctx.Err() == nil && cg.OOMKilled() {
			// The OOM killer chose the init itself.
			return &ExitError{Code: 128 + int(syscall.SIGKILL), Signal: syscall.SIGKILL, OOMKilled: true,
				MemoryLimit: spec.Limits.Memory}
		}
		return err
	}
	if err := removeCopiedUp(upperDir(cfg.Root), res.CopiedUp); err != nil {
		return err
	}
	switch {
	case res.Error != "":
		return &SetupError{Msg: res.Error, Errno: syscall.Errno(res.Errno)}
	case res.Signal != 0:
		ee := &ExitError{Code: 128 + res.Signal, Signal: syscall.Signal(res.Signal)}
		if ee.Signal == syscall.SIGKILL && cg.OOMKilled() {
			ee.OOMKilled, ee.MemoryLimit = true, spec.Limits.Memory
		}
		return ee
	case res.Code != 0:
		// A shell reports a child the OOM killer took as 137.
		ee := &ExitError{Code: res.Code}
		if res.Code == 128+int(syscall.SIGKILL) && cg.OOMKilled() {
			ee.OOMKilled, ee.MemoryLimit = true, spec.Limits.Memory
		}
		return ee
	}
	return nil
}

// newConfig checks spec and fills in the defaults of the init's config,
// except for Scratch.
func newConfig(spec Spec) (*initConfig, error) {
	if len(spec.Root) == 0 {
		return nil, errors.New("sandbox: no root mounts")
	}
	if len(spec.Args) == 0 || spec.Args[0] == "" {
		return nil, errors.New("sandbox: no command")
	}
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("sandbox: working directory %q is not absolute", cwd)
	}
	var chroot bool
	switch spec.Isolation {
	case "", IsolationNamespaces:
	case IsolationChroot:
		chroot = true
		if len(spec.Root) != 1 || spec.Root[0].Type != "bind" {
			return nil, errors.New("sandbox: chroot isolation needs a root directory (one bind mount, as the naive snapshotter gives)")
		}
	default:
		return nil, fmt.Errorf("sandbox: unknown isolation %q", spec.Isolation)
	}
	var newNet, private bool
	switch spec.Network {
	case "", "host":
	case "none":
		newNet = true
	case "private":
		newNet, private = true, true
		if !spec.NAT.Valid() {
			return nil, fmt.Errorf("sandbox: private network without a NAT (tool %q)", spec.NAT.Tool)
		}
	default:
		return nil, fmt.Errorf("sandbox: unsupported network mode %q", spec.Network)
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) == "/" {
			return nil, fmt.Errorf("sandbox: invalid mount target %q", m.Target)
		}
		switch m.Type {
		case "bind":
			if !filepath.IsAbs(m.Root) {
				return nil, fmt.Errorf("sandbox: bind root %q is not absolute", m.Root)
			}
		case "tmpfs":
		default:
			return nil, fmt.Errorf("sandbox: unsupported mount type %q", m.Type)
		}
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = DefaultHostname
	}
	hosts := spec.Hosts
	if hosts == nil {
		hosts = fmt.Appendf(nil, "127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n", hostname)
	}
	for _, h := range spec.ExtraHosts {
		if strings.ContainsAny(h.Host+h.IP, " \t\r\n#") || h.Host == "" || h.IP == "" {
			return nil, fmt.Errorf("sandbox: invalid hosts entry %q %q", h.Host, h.IP)
		}
		hosts = fmt.Appendf(hosts[:len(hosts):len(hosts)], "%s\t%s\n", h.IP, h.Host)
	}
	shm := spec.ShmSize
	if shm == 0 {
		shm = DefaultShmSize
	}
	if shm < 0 {
		return nil, fmt.Errorf("sandbox: negative /dev/shm size %d", shm)
	}
	resolv := spec.ResolvConf
	if resolv == nil {
		b, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read host resolv.conf: %w", err)
		}
		resolv = b
		if private {
			resolv = spec.NAT.ResolvConf(b)
		}
	}
	env := spec.Env
	if !hasEnv(env, "PATH") {
		env = append(env[:len(env):len(env)], "PATH="+DefaultPath)
	}
	return &initConfig{
		Root:       spec.Root,
		Args:       spec.Args,
		Env:        env,
		Cwd:        filepath.Clean(cwd),
		User:       spec.User,
		Hostname:   hostname,
		Hosts:      hosts,
		ResolvConf: resolv,
		NewNet:     newNet,
		WaitNet:    private,
		NAT:        spec.NAT,
		Mounts:     sortMounts(spec.Mounts),
		Insecure:   spec.Insecure,
		Chroot:     chroot,
		Rlimits:    spec.Rlimits,
		ShmSize:    shm,

		noPIDNamespace: spec.noPIDNamespace,
	}, nil
}

// scratchDir returns the shared scratch mountpoint under tmp (os.TempDir()
// if empty), creating it if needed. Since tmp may be world-writable, it must
// be a real directory owned by root and writable by nobody else.
func scratchDir(tmp string) (string, error) {
	if tmp == "" {
		tmp = os.TempDir()
	}
	dir := filepath.Join(tmp, "builder-sandbox")
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create sandbox dir: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", fmt.Errorf("check sandbox dir: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return "", fmt.Errorf("check sandbox dir: %s is not a directory owned by us and writable only by us", dir)
	}
	return dir, nil
}

// hasEnv reports whether env sets the variable name.
func hasEnv(env []string, name string) bool {
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok && k == name {
			return true
		}
	}
	return false
}

// formatBytes renders n as a whole number of MiB or GiB where exact, else
// as bytes.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

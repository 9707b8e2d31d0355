package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"

	"builder/build/sandbox/cgroup"
	"builder/build/sandbox/nat"
)

// Reexec runs the sandbox init, the isolation probe's child or the NAT
// guard (see package nat) and exits if this process is one of them;
// otherwise it returns false at once. Call it first thing in main and in TestMain,
// before anything else starts goroutines or reads flags.
func Reexec() bool {
	if len(os.Args) != 0 && os.Args[0] == probeArg0 && os.Getenv(probeEnv) != "" {
		os.Exit(probeMain())
	}
	if nat.IsGuard() {
		os.Exit(nat.GuardMain())
	}
	if len(os.Args) == 0 || os.Args[0] != initArg0 || os.Getenv(initEnv) != "1" {
		return false
	}
	os.Exit(initMain())
	return true
}

// initMain is the whole life of the init: read the config, set the sandbox
// up, run the command, tear down, report. It returns the init's exit code:
// the command's, or 128+signal, or 1 when setup failed.
func initMain() int {
	// Capabilities are per thread, and the command is forked from this one.
	runtime.LockOSThread()
	// The builder may have inherited fds without close-on-exec from its own
	// parent; none of them may reach the command. They stay open in the
	// init (the runtime's own fds cannot be told apart from them), so start
	// checks that the working directory did not reach one through
	// /proc/self/fd, and the init is not dumpable, so that the command
	// cannot open them through /proc/1/fd.
	closeOnExecFrom(configFD)
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	out := os.NewFile(resultFD, "result")
	res := runSandbox()
	_ = json.NewEncoder(out).Encode(res)
	switch {
	case res.Error != "":
		return 1
	case res.Signal != 0:
		return 128 + res.Signal
	}
	return res.Code
}

// closeOnExecFrom marks every fd from first up close-on-exec.
func closeOnExecFrom(first int) {
	if unix.CloseRange(uint(first), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= first {
			unix.CloseOnExec(fd)
		}
	}
}

// sandbox is the init's state.
type sandbox struct {
	cfg    *initConfig
	stubs  *stubs
	mounts []string // root-relative mountpoints to detach before removing stubs

	// Paths in the scratch tmpfs.
	rootDir    string // where the root is mounted
	hostsFile  string
	resolvFile string
	layer      string     // the overlay layer of mountpoint stubs, or ""
	procFD     int        // chroot mode: the host's /proc, to find children; else 0
	sources    []*os.File // the opened sources of cfg.Mounts' binds (see source)
	pidNS      bool       // chroot mode: the init is PID 1 of a namespace of its own
	// signalListener is the chroot-mode seccomp filter's listener, or nil
	// (see serveSignals).
	signalListener *os.File
	// exited is set once the command has been reaped.
	exited atomic.Bool
}

func runSandbox() initResult {
	// Signals sent before the command starts wait in the channel and are
	// forwarded to it once it runs.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR2)

	var cfg initConfig
	f := os.NewFile(configFD, "config")
	err := json.NewDecoder(f).Decode(&cfg)
	f.Close()
	if err != nil {
		return initResult{Error: fmt.Sprintf("decode sandbox config: %v", err)}
	}
	// The init joins the run's cgroups before it starts anything, so the
	// whole tree is limited.
	if err := cgroup.Join(cfg.Cgroups); err != nil {
		return initResult{Error: err.Error()}
	}
	unix.Umask(0)
	scratch := cfg.Scratch
	s := &sandbox{
		cfg:        &cfg,
		rootDir:    filepath.Join(scratch, "root"),
		hostsFile:  filepath.Join(scratch, "hosts"),
		resolvFile: filepath.Join(scratch, "resolv.conf"),
	}
	s.stubs = newStubs(s.rootDir, upperDir(cfg.Root))
	setup := s.setup
	if cfg.Chroot {
		s.rootDir = cfg.Root[0].Source
		s.stubs = newStubs(s.rootDir, "")
		setup = s.setupChroot
	}
	pid, err := setup()
	if err != nil {
		s.teardown()
		return initResult{Error: err.Error(), CopiedUp: s.stubs.copied}
	}
	// The command leads its own process group: its pgid is its pid.
	stopSignals := serveSignals(s.signalListener, pid, &s.exited)
	ws := s.wait(pid, sigs)
	stopSignals()
	s.teardown()
	res := initResult{CopiedUp: s.stubs.copied}
	if ws.Signaled() {
		res.Signal = int(ws.Signal())
	} else {
		res.Code = ws.ExitStatus()
	}
	return res
}

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

// mountNew mounts a new filesystem (see newMount) on the mountpoint open
// as target, at the root-relative rel, records it, and returns the mount's
// fd, which the caller closes.
func (s *sandbox) mountNew(fstype, data string, flags uintptr, target *os.File, rel string) (int, error) {
	m, err := newMount(fstype, data, flags)
	if err != nil {
		return -1, fmt.Errorf("mount %s on %s: %w", fstype, rel, err)
	}
	if err := s.attach(m, target, rel); err != nil {
		unix.Close(m)
		return -1, fmt.Errorf("mount %s on %s: %w", fstype, rel, err)
	}
	return m, nil
}

// attach moves the detached mount tree onto the mountpoint open as target,
// at the root-relative rel, and records it.
func (s *sandbox) attach(tree int, target *os.File, rel string) error {
	if err := attach(tree, int(target.Fd())); err != nil {
		return err
	}
	s.mounts = append(s.mounts, rel)
	return nil
}

func (s *sandbox) mountProc() error {
	t, p, err := s.stubs.ensure("/proc", true)
	if err != nil {
		return err
	}
	defer t.Close()
	m, err := s.mountNew("proc", "", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, t, p)
	if err != nil {
		return err
	}
	unix.Close(m)
	return nil
}

// mountChrootProc mounts /proc for a chroot-mode run where the init has a
// PID namespace of its own: the namespace's /proc, which shows the run's
// processes only. Without one, /proc is left out: a proc mount would show
// the host's processes and their command lines and environments. Its
// hidepid option does not keep them from a root RUN: processes of other
// users and with more capabilities are hidden, but one group is exempt
// (root's, unless another is named in the mount options, which the RUN can
// read), and CAP_SETGID lets root join any group.
func (s *sandbox) mountChrootProc() error {
	if !s.pidNS {
		return nil
	}
	return s.mountProc()
}

// devices are the character devices of the sandbox's /dev.
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
	{"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// mountDev mounts a minimal /dev on tmpfs: the usual devices, a private
// devpts, /dev/shm and the stdio symlinks. Unless the run is insecure, the
// tmpfs itself is then made nodev, so that a node the command creates in
// /dev cannot be opened; each standard device sits on a bind mount of its
// own (see makeDevice), which keeps it usable, and devpts allows no mknod.
func (s *sandbox) mountDev() error {
	t, p, err := s.stubs.ensure("/dev", true)
	if err != nil {
		return err
	}
	defer t.Close()
	m, err := s.mountNew("tmpfs", "mode=755,size=65536k", unix.MS_NOSUID|unix.MS_STRICTATIME, t, p)
	if err != nil {
		return err
	}
	defer unix.Close(m)
	// The new tmpfs is filled through its own fd.
	dev := fdPath(m)
	for _, d := range devices {
		if err := makeDevice(filepath.Join(dev, d.name), d.name, d.major, d.minor); err != nil {
			return err
		}
	}
	pts := filepath.Join(dev, "pts")
	if err := os.Mkdir(pts, 0o755); err != nil {
		return fmt.Errorf("create /dev/pts: %w", err)
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC,
		"newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return fmt.Errorf("mount devpts on /dev/pts: %w", err)
	}
	shm := filepath.Join(dev, "shm")
	if err := os.Mkdir(shm, 0o1777); err != nil {
		return fmt.Errorf("create /dev/shm: %w", err)
	}
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("mount tmpfs on /dev/shm: %w", err)
	}
	for _, l := range [][2]string{
		{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	} {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("create /dev/%s: %w", l[1], err)
		}
	}
	if s.cfg.Insecure {
		return nil
	}
	// Only the tmpfs's own mount: the device binds and devpts below it
	// keep their flags.
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(m, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("make /dev nodev: %w", err)
	}
	return nil
}

// makeDevice creates a character device node and binds it onto itself, or,
// where mknod is not allowed, bind-mounts the host's device on an empty
// file. Either way the device is a mount of its own, whose flags stay when
// the /dev tmpfs is made nodev.
func makeDevice(path, name string, major, minor uint32) error {
	err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor)))
	if err == nil || !errors.Is(err, unix.EPERM) {
		if err != nil {
			return fmt.Errorf("create /dev/%s: %w", name, err)
		}
		if err := unix.Mount(path, path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", name, err)
		}
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		return fmt.Errorf("create /dev/%s: %w", name, err)
	}
	f.Close()
	if err := unix.Mount("/dev/"+name, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /dev/%s: %w", name, err)
	}
	return nil
}

// mountSys mounts a read-only sysfs, or a read-only bind of the host's /sys
// where a new sysfs is not allowed.
func (s *sandbox) mountSys() error {
	t, p, err := s.stubs.ensure("/sys", true)
	if err != nil {
		return err
	}
	defer t.Close()
	const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if m, err := s.mountNew("sysfs", "", flags, t, p); err == nil {
		unix.Close(m)
		return nil
	}
	sys, err := unix.Open("/sys", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount sysfs on %s: %w", p, err)
	}
	defer unix.Close(sys)
	tree, err := cloneMount(sys, true, flags)
	if err != nil {
		return fmt.Errorf("mount sysfs on %s: %w", p, err)
	}
	defer unix.Close(tree)
	if err := s.attach(tree, t, p); err != nil {
		return fmt.Errorf("mount sysfs on %s: %w", p, err)
	}
	return nil
}

// maskedPaths are hidden and readonlyPaths made read-only, as Docker does by
// default.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// maskPaths hides and write-protects the kernel interfaces that Docker's
// default profile does, unless the run is insecure. The mounts sit on /proc
// and /sys and go away with them. Each path is resolved inside the root.
func (s *sandbox) maskPaths() error {
	if s.cfg.Insecure {
		return nil
	}
	null, err := s.stubs.open("/dev/null", unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("open /dev/null: %w", err)
	}
	defer unix.Close(null)
	for _, p := range maskedPaths {
		if err := s.maskPath(p, null); err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	for _, p := range readonlyPaths {
		fd, err := s.stubs.open(p, unix.O_PATH|unix.O_NOFOLLOW)
		if err != nil {
			continue
		}
		const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
		tree, err := cloneMount(fd, true, flags)
		if err == nil {
			err = attach(tree, fd)
			unix.Close(tree)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("make %s read-only: %w", p, err)
		}
	}
	return nil
}

// maskPath hides the root-relative p, if it exists, under an empty
// read-only tmpfs (a directory) or the sandbox's /dev/null, open as null
// (anything else).
func (s *sandbox) maskPath(p string, null int) error {
	fd, err := s.stubs.open(p, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var tree int
	if isDirFD(fd) {
		tree, err = newMount("tmpfs", "size=0", unix.MS_RDONLY)
	} else {
		tree, err = cloneMount(null, false, 0)
	}
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	return attach(tree, fd)
}

// mountEtc bind-mounts the run's hosts and resolv.conf read-only, as
// BuildKit does.
func (s *sandbox) mountEtc() error {
	for _, f := range []struct{ target, source string }{
		{"/etc/hosts", s.hostsFile},
		{"/etc/resolv.conf", s.resolvFile},
	} {
		if err := s.bindFile(f.source, f.target); err != nil {
			return fmt.Errorf("mount %s: %w", f.target, err)
		}
	}
	return nil
}

// bindFile bind-mounts the init's own file source read-only on the
// root-relative target, creating a stub for it if needed.
func (s *sandbox) bindFile(source, target string) error {
	src, err := unix.Open(source, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	t, p, err := s.stubs.ensure(target, false)
	if err != nil {
		return err
	}
	defer t.Close()
	tree, err := cloneMount(src, false, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	return s.attach(tree, t, p)
}

// source returns the source of the bind mount cfg.Mounts[i], resolved
// inside its root and opened (O_PATH) on the first call (see openSource);
// every later use goes through that fd.
func (s *sandbox) source(i int) (*os.File, error) {
	if s.sources == nil {
		s.sources = make([]*os.File, len(s.cfg.Mounts))
	}
	if s.sources[i] != nil {
		return s.sources[i], nil
	}
	f, err := openSource(s.cfg.Mounts[i])
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", s.cfg.Mounts[i].Target, err)
	}
	s.sources[i] = f
	return f, nil
}

// isDirFD reports whether fd is open on a directory.
func isDirFD(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// mountExtra applies the RUN --mount mounts, all of them nosuid and nodev:
// binds from their sources' fds (see source) and new tmpfs filesystems,
// each on its mountpoint's fd (see stubs.ensure).
func (s *sandbox) mountExtra() error {
	for i, m := range s.cfg.Mounts {
		flags, data := parseOptions(m.Options)
		flags |= unix.MS_NOSUID | unix.MS_NODEV
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		switch m.Type {
		case "bind":
			src, err := s.source(i)
			if err != nil {
				return err
			}
			t, p, err := s.stubs.ensure(m.Target, isDirFD(int(src.Fd())))
			if err != nil {
				return err
			}
			recursive := flags&unix.MS_BIND == 0 || flags&unix.MS_REC != 0
			tree, err := cloneMount(int(src.Fd()), recursive, flags)
			if err == nil {
				err = s.attach(tree, t, p)
				unix.Close(tree)
			}
			t.Close()
			if err != nil {
				return fmt.Errorf("mount %s: %w", m.Target, err)
			}
		case "tmpfs":
			t, p, err := s.stubs.ensure(m.Target, true)
			if err != nil {
				return err
			}
			tree, err := s.mountNew("tmpfs", data, flags, t, p)
			t.Close()
			if err != nil {
				return err
			}
			unix.Close(tree)
		default:
			return fmt.Errorf("mount %s: unsupported type %q", m.Target, m.Type)
		}
	}
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
		pid, s.signalListener, err = forkHardened(argv0, cfg.Args, attr, cfg.Chroot)
	}
	if err != nil {
		return 0, fmt.Errorf("exec %s: %w", cfg.Args[0], err)
	}
	return pid, nil
}

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

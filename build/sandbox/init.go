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
	"strconv"
	"sync/atomic"
	"syscall"

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

// setupFailed is the result of a setup that failed with err: its text
// and, so that the error keeps its class across the process boundary, the
// errno in its chain.
func setupFailed(err error) initResult {
	res := initResult{Error: err.Error()}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		res.Errno = int(errno)
	}
	return res
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
		return setupFailed(fmt.Errorf("decode sandbox config: %w", err))
	}
	// The init joins the run's cgroups before it starts anything, so the
	// whole tree is limited.
	if err := cgroup.Join(cfg.Cgroups); err != nil {
		return setupFailed(err)
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
		res := setupFailed(err)
		res.CopiedUp = s.stubs.copied
		return res
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

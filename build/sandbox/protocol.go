package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"builder/build/sandbox/nat"
	"builder/build/sandbox/seccomp"
	"builder/snapshot"
)

// initArg0 and initEnv mark a process as the sandbox init; Reexec checks
// both.
const (
	initArg0 = "builder-sandbox-init"
	initEnv  = "_BUILDER_SANDBOX_INIT"
	// mountNSEnv tells a chroot-mode init that it was started in a mount
	// namespace of its own, so that it may mount.
	mountNSEnv = "_BUILDER_SANDBOX_MOUNTNS"
	// pidNSEnv tells a chroot-mode init that it was started in a PID
	// namespace of its own, as its PID 1.
	pidNSEnv = "_BUILDER_SANDBOX_PIDNS"
	// probeArg0 and probeEnv mark the throwaway child of Probe.
	probeArg0 = "builder-sandbox-probe"
	probeEnv  = "_BUILDER_SANDBOX_PROBE"
)

// The init gets its config on fd 3 and writes its result to fd 4. With
// WaitNet, it reads one byte from fd 5 before it starts the command: the
// go-ahead Run sends once the NAT has configured the network namespace (EOF
// means it could not).
const (
	configFD = 3
	resultFD = 4
	goFD     = 5
)

// initConfig is what Run sends to the init, as JSON.
type initConfig struct {
	Root     []snapshot.Mount `json:"root"`
	Scratch  string           `json:"scratch"` // host directory to mount the scratch tmpfs on
	Args     []string         `json:"args"`
	Env      []string         `json:"env"`
	Cwd      string           `json:"cwd"`
	User     string           `json:"user,omitempty"`
	Hostname string           `json:"hostname"`
	NewNet   bool             `json:"newNet,omitempty"`
	// WaitNet makes the init wait for the go-ahead on goFD before it starts
	// the command (a private network, see NAT).
	WaitNet    bool    `json:"waitNet,omitempty"`
	Hosts      []byte  `json:"hosts"`
	ResolvConf []byte  `json:"resolvConf"`
	Mounts     []Mount `json:"mounts,omitempty"`
	Insecure   bool    `json:"insecure,omitempty"`
	// Chroot selects chroot isolation: no namespaces of the init's own
	// (see IsolationChroot); Root is one bind mount whose source is used
	// as the root directory itself.
	Chroot bool `json:"chroot,omitempty"`
	// Rlimits are set before the command starts (Spec.Rlimits).
	Rlimits []Rlimit `json:"rlimits,omitempty"`
	// ShmSize is the size of /dev/shm in bytes.
	ShmSize int64 `json:"shmSize"`
	// NAT is the NAT of a private network; the builder starts it.
	NAT nat.NAT `json:"-"`
	// Cgroups are the run's cgroup directories, which the init joins
	// before anything else.
	Cgroups []string `json:"cgroups,omitempty"`
	// Seccomp are the command's seccomp filters, compiled once by the
	// builder (filtersFor); unused when Insecure.
	Seccomp seccomp.Filters `json:"seccomp"`

	// noPIDNamespace is Spec.noPIDNamespace; runInit reads it, the init
	// does not.
	noPIDNamespace bool
}

// initResult is what the init sends back, as JSON, right before it exits.
type initResult struct {
	// Error is a setup failure; the command did not run.
	Error string `json:"error,omitempty"`
	// Errno is the errno in the setup failure's chain, 0 if none.
	Errno int `json:"errno,omitempty"`
	// Code and Signal describe how the command ended.
	Code   int `json:"code"`
	Signal int `json:"signal,omitempty"`
	// CopiedUp lists overlay directories that creating mountpoints copied
	// up; Run removes those left empty and unchanged from the upper dir.
	CopiedUp []copiedUp `json:"copiedUp,omitempty"`
}

// copiedUp is a directory of the merged root, by path inside the root, that
// was absent from the overlay upper dir before the init created a
// mountpoint under it, with its metadata at that time.
type copiedUp struct {
	Path  string `json:"path"`
	Mode  uint32 `json:"mode"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Mtime int64  `json:"mtime"` // nanoseconds since the epoch
}

// runInit starts the init with cfg, waits for it and returns its result.
// The calling goroutine stays locked to its thread from fork to wait, since
// Pdeathsig fires when the forking thread exits, not the process.
func runInit(ctx context.Context, cfg *initConfig, stdout, stderr io.Writer) (*initResult, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create config pipe: %w", err)
	}
	defer cfgR.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create result pipe: %w", err)
	}
	defer resR.Close()
	defer resW.Close()
	// A private network's init waits for the go-ahead once the NAT runs.
	var goR, goW *os.File
	if cfg.WaitNet {
		if goR, goW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("create go-ahead pipe: %w", err)
		}
		defer goR.Close()
		defer goW.Close()
	}

	attempts := initAttempts(cfg)
	newCmd := func(a attempt) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "/proc/self/exe")
		cmd.Args = []string{initArg0}
		cmd.Env = a.env
		cmd.Dir = "/"
		cmd.Stdout = stdout
		cmd.Stderr = stderr
		cmd.ExtraFiles = []*os.File{cfgR, resW}
		if goR != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, goR)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags: a.flags,
			Pdeathsig:  syscall.SIGKILL,
			Setsid:     true,
		}
		if cfg.Chroot {
			// Without a PID namespace, killing the init would orphan
			// the command's tree: the init kills it on SIGUSR2 instead,
			// and is killed itself only if it does not exit in time.
			cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGUSR2) }
			cmd.WaitDelay = 10 * time.Second
			// The same when the builder dies (even by SIGKILL): the
			// init takes the tree down before it exits.
			cmd.SysProcAttr.Pdeathsig = unix.SIGUSR2
		}
		return cmd
	}

	// The config is written ahead so that the init never waits for it; a
	// write error means the init died, and its exit status says why.
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode sandbox config: %w", err)
	}
	written := make(chan struct{})
	go func() {
		defer close(written)
		_, _ = cfgW.Write(cfgJSON)
		cfgW.Close()
	}()
	defer func() { <-written }()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cmd *exec.Cmd
	for i, a := range attempts {
		cmd = newCmd(a)
		err = cmd.Start()
		if err == nil || i == len(attempts)-1 || !errors.Is(err, unix.EPERM) {
			break
		}
	}
	if err != nil {
		cfgR.Close() // unblocks the writer
		return nil, fmt.Errorf("start sandbox: %w", err)
	}
	cfgR.Close()
	resW.Close()
	var natErr error
	if cfg.WaitNet {
		// The NAT outlives the init: it is stopped after the wait below.
		var p *nat.Process
		if p, natErr = goAhead(ctx, cfg.NAT, cmd.Process.Pid, goR, goW); natErr == nil {
			defer p.Close()
		}
	}
	out, readErr := io.ReadAll(resR)
	waitErr := cmd.Wait()

	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("run sandbox: %w", err)
	}
	if natErr != nil {
		return nil, natErr
	}
	if readErr != nil {
		return nil, fmt.Errorf("read sandbox result: %w", readErr)
	}
	var res initResult
	if len(bytes.TrimSpace(out)) == 0 {
		if waitErr == nil {
			waitErr = errors.New("no result")
		}
		return nil, fmt.Errorf("sandbox init: %w", waitErr)
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("decode sandbox result: %w", err)
	}
	return &res, nil
}

// attempt is one way to start the init: its clone flags and environment.
type attempt struct {
	flags uintptr
	env   []string
}

// initAttempts returns the ways to start the init for cfg, to be tried in
// turn while the kernel refuses one with EPERM. Namespace mode has one. In
// chroot mode, a PID namespace (which keeps the host's processes out of the
// command's sight and reach) and a mount namespace (which lets the init
// mount /proc, /dev and the rest) are each taken where permitted, both
// first, then each alone, then neither; the init is told which it has.
func initAttempts(cfg *initConfig) []attempt {
	base := []string{initEnv + "=1", "GOMAXPROCS=1", "GOGC=off"}
	var netFlag uintptr
	if cfg.NewNet {
		netFlag = unix.CLONE_NEWNET
	}
	if !cfg.Chroot {
		return []attempt{{unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | netFlag, base}}
	}
	with := func(flags uintptr, env ...string) attempt {
		return attempt{flags | netFlag, append(base[:len(base):len(base)], env...)}
	}
	mnt, pid := mountNSEnv+"=1", pidNSEnv+"=1"
	attempts := []attempt{
		with(unix.CLONE_NEWNS|unix.CLONE_NEWPID, mnt, pid),
		with(unix.CLONE_NEWNS, mnt),
		with(unix.CLONE_NEWPID, pid),
		with(0),
	}
	if cfg.noPIDNamespace {
		attempts = []attempt{attempts[1], attempts[3]}
	}
	return attempts
}

// sortMounts returns mounts ordered by target depth, shallowest first, so
// that a mount never hides one made before it; equal depths keep their order.
func sortMounts(mounts []Mount) []Mount {
	out := slices.Clone(mounts)
	slices.SortStableFunc(out, func(a, b Mount) int {
		return depth(a.Target) - depth(b.Target)
	})
	return out
}

func depth(p string) int {
	p = filepath.Clean("/" + p)
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// upperDir returns the upperdir option of the overlay mount among root, or
// "" when there is none.
func upperDir(root []snapshot.Mount) string {
	for _, m := range root {
		if m.Type != "overlay" {
			continue
		}
		for _, o := range m.Options {
			for _, w := range strings.Split(o, ",") {
				if v, ok := strings.CutPrefix(w, "upperdir="); ok {
					return v
				}
			}
		}
	}
	return ""
}

package sandbox

import (
	"path/filepath"
	"slices"
	"strings"

	"builder/build/sandbox/nat"
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
	// NAT is the NAT of a private network; the builder starts it.
	NAT nat.NAT `json:"-"`
	// Cgroups are the run's cgroup directories, which the init joins
	// before anything else.
	Cgroups []string `json:"cgroups,omitempty"`

	// noPIDNamespace is Spec.noPIDNamespace; runInit reads it, the init
	// does not.
	noPIDNamespace bool
}

// initResult is what the init sends back, as JSON, right before it exits.
type initResult struct {
	// Error is a setup failure; the command did not run.
	Error string `json:"error,omitempty"`
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

// Package cgroup confines the process tree of one RUN with cgroups: the
// memory, CPU and process limits of docker build's --memory, --cpus and
// --pids-limit (Limits), and a device allowlist (devices.go) in the v1
// devices controller or, in the unified hierarchy, as an eBPF device
// program. Probe finds once which hierarchy serves each controller on this
// machine; Create makes a fresh cgroup per run below the builder's own
// cgroup in each hierarchy it needs, writes the limits and the allowlist,
// and Group.Remove kills what is left in it and removes it. The sandbox's
// init joins the run's directories (Join) before it starts anything.
//
// The eBPF device program is assembled here (a dozen instructions) rather
// than with an eBPF library: the program is fixed, and the builder stays
// free of cgo and of a loader it would use for one program.
package cgroup

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Limits are the resource limits of one RUN's process tree, as docker
// build's --memory, --cpus and --pids-limit give them. Zero means no limit.
type Limits struct {
	Memory int64   // bytes of memory (swap included where the kernel accounts it)
	CPUs   float64 // CPU time, in CPUs (1.5 = one and a half cores)
	Pids   int64   // processes and threads
}

// IsZero reports whether l sets no limit.
func (l Limits) IsZero() bool { return l.Memory == 0 && l.CPUs == 0 && l.Pids == 0 }

// cgroupParent is the directory, below the builder's own cgroup in each
// hierarchy, that holds one cgroup per run. Nesting below the builder's own
// cgroup keeps every limit the builder itself runs under.
const cgroupParent = "builder-run"

// devicesCtrl names the device allowlist: the v1 devices controller, or a
// device filter program in the unified hierarchy, which has no controller
// of that name.
const devicesCtrl = "devices"

// ctrl names one controller of Limits, or the device allowlist, and the
// hierarchy that serves it.
type ctrl struct {
	name string // "memory", "cpu", "pids" or devicesCtrl
	v2   bool
	dir  string // the builder's own cgroup directory in that hierarchy
}

// Support says how Limits can be enforced on this machine: by
// controller, the cgroup version that serves it.
type Support struct {
	ctrls map[string]ctrl
	// devices are where a run's device accesses can be restricted: the v1
	// devices controller and, in the unified hierarchy, a cgroup that a
	// device filter program can be attached to.
	devices []ctrl
	// Reason says why a controller is missing, for the warning.
	Reason string
}

// Version returns "v2", "v1", "v1+v2" (controllers split between the
// hierarchies) or "" when no controller is usable.
func (c Support) Version() string {
	var v1, v2 bool
	for _, k := range c.ctrls {
		if k.v2 {
			v2 = true
		} else {
			v1 = true
		}
	}
	switch {
	case v1 && v2:
		return "v1+v2"
	case v2:
		return "v2"
	case v1:
		return "v1"
	}
	return ""
}

// DeviceFilter returns "v1", "v2" or "v1+v2": the hierarchies in which
// every run gets a device allowlist (see allowedDevices); "" when neither
// is usable, and only nodev mounts keep RUN from opening device nodes.
func (c Support) DeviceFilter() string {
	var v []string
	for _, k := range c.devices {
		if k.v2 {
			v = append(v, "v2")
		} else {
			v = append(v, "v1")
		}
	}
	return strings.Join(v, "+")
}

// Supports reports whether every limit that l sets has a usable
// controller.
func (c Support) Supports(l Limits) bool {
	for _, n := range l.controllers() {
		if _, ok := c.ctrls[n]; !ok {
			return false
		}
	}
	return true
}

func (l Limits) controllers() []string {
	var n []string
	if l.Memory != 0 {
		n = append(n, "memory")
	}
	if l.CPUs != 0 {
		n = append(n, "cpu")
	}
	if l.Pids != 0 {
		n = append(n, "pids")
	}
	return n
}

// RunCgroups lists the per-run cgroups that exist now under the builder's
// parents: while no RUN is running, there should be none.
func (c Support) RunCgroups() ([]string, error) {
	return c.RunCgroupsOf(0)
}

// RunCgroupsOf lists the per-run cgroups that exist now and were made by
// the builder process pid (all of them for 0).
func (c Support) RunCgroupsOf(pid int) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, k := range append(slices.Collect(maps.Values(c.ctrls)), c.devices...) {
		if seen[k.dir] {
			continue
		}
		seen[k.dir] = true
		ents, err := os.ReadDir(filepath.Join(k.dir, cgroupParent))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("list cgroups: %w", err)
		}
		for _, e := range ents {
			if e.IsDir() && (pid == 0 || strings.HasPrefix(e.Name(), ownerPrefix(pid))) {
				out = append(out, filepath.Join(k.dir, cgroupParent, e.Name()))
			}
		}
	}
	return out, nil
}

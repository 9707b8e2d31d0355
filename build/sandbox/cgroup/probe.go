package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Probe finds, for the memory, cpu and pids controllers, a cgroup
// hierarchy in which the builder can create child cgroups: the unified (v2)
// hierarchy where the builder's own cgroup already delegates the controller
// to its children (cgroup.subtree_control), else the v1 hierarchy of that
// controller. It also finds where a device allowlist can be applied, the v1
// devices controller and the unified hierarchy, by applying it to a
// throwaway cgroup. It tries creating the builder-run parent directory and
// removes it again; it changes nothing else.
func Probe() Support {
	sup := Support{ctrls: map[string]ctrl{}}
	own, err := ownCgroups()
	if err != nil {
		sup.Reason = err.Error()
		return sup
	}
	mounts, err := cgroupMounts()
	if err != nil {
		sup.Reason = err.Error()
		return sup
	}
	var why []string
	for _, name := range []string{"memory", "cpu", "pids"} {
		if c, ok := probeV2(name, own, mounts); ok {
			sup.ctrls[name] = c
			continue
		}
		c, err := probeV1(name, own, mounts)
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		sup.ctrls[name] = c
	}
	sup.Reason = strings.Join(why, "; ")
	// Where neither works (rootless, an unprivileged container), the
	// nodev mounts alone keep RUN from opening device nodes.
	var devs []ctrl
	if c, err := probeV1(devicesCtrl, own, mounts); err == nil {
		devs = append(devs, c)
	}
	if c, ok := unifiedDir(own, mounts); ok {
		devs = append(devs, c)
	}
	for _, c := range devs {
		if probeDevices(c) == nil {
			sup.devices = append(sup.devices, c)
		}
	}
	return sup
}

// probeDevices applies the device allowlist to a throwaway run cgroup in
// c's hierarchy and removes it again. Creating a cgroup is not enough:
// writing a v1 devices list needs CAP_SYS_ADMIN, and loading and attaching
// the v2 program needs its own privileges and kernel support.
func probeDevices(c ctrl) error {
	cg, err := Create(Support{devices: []ctrl{c}}, Limits{}, true)
	if err != nil {
		return err
	}
	return cg.Remove(context.Background())
}

// unifiedDir returns the builder's own cgroup in the unified hierarchy,
// where a device filter program can be attached to a run's cgroup: that
// needs no controller.
func unifiedDir(own map[string]string, mounts []cgroupMount) (ctrl, bool) {
	if dirs := ownV2Dirs(own, mounts); len(dirs) > 0 {
		return ctrl{name: devicesCtrl, v2: true, dir: dirs[0]}, true
	}
	return ctrl{}, false
}

// ownCgroups reads /proc/self/cgroup: the builder's cgroup path by
// controller name, "" for the unified hierarchy.
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroups: %w", err)
	}
	own := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			own[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	return own, nil
}

// cgroupMount is one mounted cgroup hierarchy.
type cgroupMount struct {
	dir   string
	root  string // the cgroup path mounted there (mountinfo field 4)
	v2    bool
	ctrls []string
}

// cgroupMounts lists the cgroup hierarchies mounted in this mount namespace.
func cgroupMounts() ([]cgroupMount, error) {
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	var out []cgroupMount
	for _, m := range infos {
		cm := cgroupMount{dir: m.Mountpoint, root: m.Root, v2: m.FSType == "cgroup2"}
		if !cm.v2 {
			cm.ctrls = strings.Split(m.VFSOptions, ",")
		}
		out = append(out, cm)
	}
	return out, nil
}

// cgroupDir joins a hierarchy's mountpoint with a cgroup path, given the
// path the mount shows as its root.
func cgroupDir(m cgroupMount, path string) (string, bool) {
	rel, err := filepath.Rel(m.root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return filepath.Join(m.dir, rel), true
}

// ownV2Dirs returns the builder's own cgroup as seen through each mount of
// the unified hierarchy that shows it.
func ownV2Dirs(own map[string]string, mounts []cgroupMount) []string {
	path, ok := own[""]
	if !ok {
		return nil
	}
	var dirs []string
	for _, m := range mounts {
		if !m.v2 {
			continue
		}
		if dir, ok := cgroupDir(m, path); ok {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

func probeV2(name string, own map[string]string, mounts []cgroupMount) (ctrl, bool) {
	for _, dir := range ownV2Dirs(own, mounts) {
		// The builder's own cgroup is not changed: enabling a controller
		// there would affect its siblings, and fails anyway (EBUSY) when
		// it holds processes and is not the root.
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		if err != nil || !containsWord(string(b), name) {
			continue
		}
		c := ctrl{name: name, v2: true, dir: dir}
		parent, err := c.ensureParent()
		if err != nil {
			continue
		}
		_ = unix.Rmdir(parent)
		return c, true
	}
	return ctrl{}, false
}

// ensureParent creates the builder-run directory below the builder's own
// cgroup if needed and, in the unified hierarchy, delegates the controller
// to its children. It returns the directory.
func (c ctrl) ensureParent() (string, error) {
	parent := filepath.Join(c.dir, cgroupParent)
	if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create cgroup: %w", err)
	}
	if c.v2 && c.name != devicesCtrl {
		if err := enableController(parent, c.name); err != nil {
			return "", fmt.Errorf("enable cgroup controller %s: %w", c.name, err)
		}
	}
	return parent, nil
}

func enableController(dir, name string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err == nil && containsWord(string(b), name) {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+name), 0)
}

func probeV1(name string, own map[string]string, mounts []cgroupMount) (ctrl, error) {
	path, ok := own[name]
	if !ok {
		return ctrl{}, errors.New("no v1 hierarchy and not enabled in the unified one")
	}
	for _, m := range mounts {
		if m.v2 || !containsWord(strings.Join(m.ctrls, " "), name) {
			continue
		}
		dir, ok := cgroupDir(m, path)
		if !ok {
			continue
		}
		c := ctrl{name: name, dir: dir}
		parent, err := c.ensureParent()
		if err != nil {
			return ctrl{}, err
		}
		_ = unix.Rmdir(parent)
		return c, nil
	}
	return ctrl{}, errors.New("hierarchy not mounted")
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

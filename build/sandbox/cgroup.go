package sandbox

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
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

// CgroupSupport says how Limits can be enforced on this machine: by
// controller, the cgroup version that serves it.
type CgroupSupport struct {
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
func (c CgroupSupport) Version() string {
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
func (c CgroupSupport) DeviceFilter() string {
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
func (c CgroupSupport) Supports(l Limits) bool {
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

// ProbeCgroups finds, for the memory, cpu and pids controllers, a cgroup
// hierarchy in which the builder can create child cgroups: the unified (v2)
// hierarchy where the builder's own cgroup already delegates the controller
// to its children (cgroup.subtree_control), else the v1 hierarchy of that
// controller. It also finds where a device allowlist can be applied, the v1
// devices controller and the unified hierarchy, by applying it to a
// throwaway cgroup. It tries creating the builder-run parent directory and
// removes it again; it changes nothing else.
func ProbeCgroups() CgroupSupport {
	sup := CgroupSupport{ctrls: map[string]ctrl{}}
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
	cg, err := newRunCgroup(CgroupSupport{devices: []ctrl{c}}, Limits{}, true)
	if err != nil {
		return err
	}
	return cg.remove(context.Background())
}

// unifiedDir returns the builder's own cgroup in the unified hierarchy,
// where a device filter program can be attached to a run's cgroup: that
// needs no controller.
func unifiedDir(own map[string]string, mounts []cgroupMount) (ctrl, bool) {
	path, ok := own[""]
	if !ok {
		return ctrl{}, false
	}
	for _, m := range mounts {
		if !m.v2 {
			continue
		}
		dir, ok := cgroupDir(m, path)
		if !ok {
			continue
		}
		return ctrl{name: devicesCtrl, v2: true, dir: dir}, true
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
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) || len(fields) < 5 {
			continue
		}
		typ := fields[sep+1]
		switch typ {
		case "cgroup2":
			out = append(out, cgroupMount{dir: unescapeMount(fields[4]), root: fields[3], v2: true})
		case "cgroup":
			out = append(out, cgroupMount{dir: unescapeMount(fields[4]), root: fields[3],
				ctrls: strings.Split(fields[sep+3], ",")})
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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

func probeV2(name string, own map[string]string, mounts []cgroupMount) (ctrl, bool) {
	path, ok := own[""]
	if !ok {
		return ctrl{}, false
	}
	for _, m := range mounts {
		if !m.v2 {
			continue
		}
		dir, ok := cgroupDir(m, path)
		if !ok {
			continue
		}
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

// runCgroup is the set of cgroup directories (one per hierarchy) of one
// run.
type runCgroup struct {
	dirs   []string
	v2     map[string]bool // dir → in the unified hierarchy
	memDir string          // the directory holding the memory controller, or ""
	memV2  bool
}

// newRunCgroup creates a fresh cgroup for one run in every hierarchy that
// serves a limit of l, and writes the limits. With devices, it also puts
// the run in a cgroup with the device allowlist in every hierarchy of
// sup.devices. On error nothing is left.
func newRunCgroup(sup CgroupSupport, l Limits, devices bool) (*runCgroup, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	// The owner's pid leads the name, so that the run cgroups of a builder
	// that died (SIGKILL leaves its runs' empty cgroups behind) can be
	// told from live ones and swept by the next run (sweepStale).
	id := ownerPrefix(os.Getpid()) + hex.EncodeToString(rnd[:])
	cg := &runCgroup{v2: map[string]bool{}}
	dirOf := map[string]string{}
	mkdir := func(c ctrl) (string, error) {
		dir := filepath.Join(c.dir, cgroupParent, id)
		if _, seen := cg.v2[dir]; !seen {
			if err := c.mkdirRun(dir); err != nil {
				cg.remove(context.Background())
				return "", err
			}
			cg.dirs = append(cg.dirs, dir)
			cg.v2[dir] = c.v2
		}
		return dir, nil
	}
	for _, n := range l.controllers() {
		c, ok := sup.ctrls[n]
		if !ok {
			return nil, fmt.Errorf("create cgroup: no usable %s controller", n)
		}
		dir, err := mkdir(c)
		if err != nil {
			return nil, err
		}
		dirOf[n] = dir
	}
	var devDirs []string
	if devices {
		for _, c := range sup.devices {
			dir, err := mkdir(c)
			if err != nil {
				return nil, err
			}
			devDirs = append(devDirs, dir)
		}
	}
	write := func(dir, file, val string) error {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
			return fmt.Errorf("set cgroup %s: %w", file, err)
		}
		return nil
	}
	var err error
	if dir, ok := dirOf["memory"]; ok {
		cg.memDir, cg.memV2 = dir, cg.v2[dir]
		mem := strconv.FormatInt(l.Memory, 10)
		if cg.memV2 {
			err = write(dir, "memory.max", mem)
			if err == nil && exists(filepath.Join(dir, "memory.swap.max")) {
				err = write(dir, "memory.swap.max", "0")
			}
		} else {
			err = write(dir, "memory.limit_in_bytes", mem)
			if err == nil && exists(filepath.Join(dir, "memory.memsw.limit_in_bytes")) {
				err = write(dir, "memory.memsw.limit_in_bytes", mem)
			}
		}
	}
	if dir, ok := dirOf["cpu"]; ok && err == nil {
		const period = 100000
		quota := int64(l.CPUs * period)
		if quota < 1000 {
			quota = 1000
		}
		if cg.v2[dir] {
			err = write(dir, "cpu.max", fmt.Sprintf("%d %d", quota, period))
		} else if err = write(dir, "cpu.cfs_period_us", strconv.Itoa(period)); err == nil {
			err = write(dir, "cpu.cfs_quota_us", strconv.FormatInt(quota, 10))
		}
	}
	if dir, ok := dirOf["pids"]; ok && err == nil {
		err = write(dir, "pids.max", strconv.FormatInt(l.Pids, 10))
	}
	for _, dir := range devDirs {
		if err != nil {
			break
		}
		if cg.v2[dir] {
			err = attachDeviceProgram(dir)
			continue
		}
		// A new v1 cgroup inherits its parent's list: deny all, then
		// allow the rules one by one.
		err = write(dir, "devices.deny", "a")
		for _, r := range allowedDevices {
			if err != nil {
				break
			}
			err = write(dir, "devices.allow", r.v1Line())
		}
	}
	if err != nil {
		cg.remove(context.Background())
		return nil, err
	}
	return cg, nil
}

// mkdirRun creates the run's directory dir below the builder-run parent,
// creating the parent too. Another builder may remove the parent when its
// last run ends, between the two steps: then it tries again.
func (c ctrl) mkdirRun(dir string) error {
	var err error
	for range 5 {
		var parent string
		if parent, err = c.ensureParent(); err != nil {
			return err
		}
		sweepStale(parent)
		if err = os.Mkdir(dir, 0o755); err == nil || !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// oomKilled reports whether the kernel's OOM killer killed a process of the
// run's memory cgroup.
func (cg *runCgroup) oomKilled() bool {
	if cg == nil || cg.memDir == "" {
		return false
	}
	file := "memory.oom_control"
	if cg.memV2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(cg.memDir, file))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n > 0
		}
	}
	return false
}

// remove kills whatever is left in the run's cgroups and removes them,
// waiting (a bounded time) for the killed processes to die: a cgroup can
// only be removed once empty. It is idempotent and ignores ctx's
// cancellation, so it also cleans up after a cancelled run.
func (cg *runCgroup) remove(ctx context.Context) error {
	if cg == nil {
		return nil
	}
	var errs []error
	for _, dir := range cg.dirs {
		if err := removeCgroup(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		// The parent goes with the last run; another run's cgroup keeps
		// it (EBUSY), which is fine.
		_ = unix.Rmdir(filepath.Dir(dir))
	}
	cg.dirs = nil
	return errors.Join(errs...)
}

func removeCgroup(dir string) error {
	delay := time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// RunCgroups lists the per-run cgroups that exist now under the builder's
// parents: while no RUN is running, there should be none.
func (c CgroupSupport) RunCgroups() ([]string, error) {
	return c.RunCgroupsOf(0)
}

// RunCgroupsOf lists the per-run cgroups that exist now and were made by
// the builder process pid (all of them for 0).
func (c CgroupSupport) RunCgroupsOf(pid int) ([]string, error) {
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

// pidNamespace is the inode of this process's PID namespace, or 0 when it
// cannot be read.
var pidNamespace = sync.OnceValue(func() uint64 {
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/pid", &st) != nil {
		return 0
	}
	return st.Ino
})

// ownerPrefix starts the name of a run cgroup made by the builder process
// pid of this PID namespace: "<namespace inode>-<pid>-". Builders in other
// PID namespaces (a builder run under unshare --pid, or in another
// container) share the cgroup tree but not the pids, so a pid means
// something only next to its namespace.
func ownerPrefix(pid int) string {
	return strconv.FormatUint(pidNamespace(), 10) + "-" + strconv.Itoa(pid) + "-"
}

// staleAge is how old a dead builder's run cgroup must be to be swept.
const staleAge = 30 * time.Second

// sweepStale removes the run cgroups under parent whose builder process is
// gone: a builder killed by SIGKILL cannot remove its runs' cgroups, and
// now that every RUN gets one (the device allowlist) they would pile up.
// Only cgroups named by a builder of this PID namespace are considered, and
// only empty ones can be removed, so a run whose processes still live is
// left alone, and a live builder's cgroups are never touched (see also
// staleAge).
func sweepStale(parent string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	ns := strconv.FormatUint(pidNamespace(), 10) + "-"
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), ns)
		if !e.IsDir() || !ok || pidNamespace() == 0 {
			continue
		}
		owner, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(owner)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		// A cgroup younger than staleAge is left alone whatever its pid
		// says: its builder may be starting the run's init right now.
		if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < staleAge {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			_ = unix.Rmdir(filepath.Join(parent, e.Name()))
		}
	}
}

package cgroup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Group is the set of cgroup directories (one per hierarchy) of one
// run.
type Group struct {
	dirs   []string
	v2     map[string]bool // dir → in the unified hierarchy
	memDir string          // the directory holding the memory controller, or ""
	memV2  bool
}

// Dirs returns the run's cgroup directories, one per hierarchy, for the
// init to Join.
func (cg *Group) Dirs() []string { return cg.dirs }

// Join moves the calling process into each of dirs (cgroup directories of
// a Group), so that every process it starts afterwards is confined too.
// The sandbox's init calls it before anything else.
func Join(dirs []string) error {
	// "0" names the writer itself.
	for _, dir := range dirs {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte("0"), 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
		if err := exemptPids(dir); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	return nil
}

// write sets a cgroup file.
func write(dir, file, val string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
		return fmt.Errorf("set cgroup %s: %w", file, err)
	}
	return nil
}

// initPidsReserve is how many more threads than it has when it joins the
// sandbox's init (a Go program) may start later: the runtime adds threads
// for blocking system calls and signals, and a refused thread kills it.
const initPidsReserve = 2

// exemptPids raises the pids limit of dir, if it has one, by the tasks the
// caller (the init) has there now and initPidsReserve, so that --pids-limit
// N leaves N to the command, as docker's --pids-limit does.
func exemptPids(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "pids.max"))
	if err != nil {
		return nil // no pids controller here
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return nil // "max": no limit
	}
	b, err = os.ReadFile(filepath.Join(dir, "pids.current"))
	if err != nil {
		return err
	}
	cur, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return fmt.Errorf("read pids.current: %w", err)
	}
	return write(dir, "pids.max", strconv.FormatInt(limit+cur+initPidsReserve, 10))
}

// Create creates a fresh cgroup for one run in every hierarchy that
// serves a limit of l, and writes the limits. With devices, it also puts
// the run in a cgroup with the device allowlist in every hierarchy of
// sup.devices. On error nothing is left.
func Create(sup Support, l Limits, devices bool) (*Group, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	// The owner's pid leads the name, so that the run cgroups of a builder
	// that died (SIGKILL leaves its runs' empty cgroups behind) can be
	// told from live ones and swept by the next run (sweepStale).
	id := ownerPrefix(os.Getpid()) + hex.EncodeToString(rnd[:])
	cg := &Group{v2: map[string]bool{}}
	dirOf := map[string]string{}
	mkdir := func(c ctrl) (string, error) {
		dir := filepath.Join(c.dir, cgroupParent, id)
		if _, seen := cg.v2[dir]; !seen {
			if err := c.mkdirRun(dir); err != nil {
				cg.Remove(context.Background())
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
		cg.Remove(context.Background())
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

// OOMKilled reports whether the kernel's OOM killer killed a process of the
// run's memory cgroup.
func (cg *Group) OOMKilled() bool {
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

// Remove kills whatever is left in the run's cgroups and removes them,
// waiting (a bounded time) for the killed processes to die: a cgroup can
// only be removed once empty. It is idempotent and ignores ctx's
// cancellation, so it also cleans up after a cancelled run.
func (cg *Group) Remove(ctx context.Context) error {
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

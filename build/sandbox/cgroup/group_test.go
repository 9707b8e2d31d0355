package cgroup

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"builder/internal/testenv"
)

// cgroupRunDirs lists the per-run cgroups this test process made that are
// still there (other processes may be building at the same time).
func cgroupRunDirs(t *testing.T, sup Support) []string {
	t.Helper()
	left, err := sup.RunCgroupsOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return left
}

// TestLimitsFiles checks the values written for each controller, and that
// removal is complete and idempotent.
func TestLimitsFiles(t *testing.T) {
	testenv.RequireRoot(t)
	sup := Probe()
	l := Limits{Memory: 48 << 20, CPUs: 1.5, Pids: 33}
	if !sup.Supports(l) {
		testenv.Skip(t, "cgroups not usable here: %s", sup.Reason)
	}
	cg, err := Create(sup, l, false)
	if err != nil {
		t.Fatal(err)
	}
	read := func(ctrl string, v1, v2 string) string {
		c := sup.ctrls[ctrl]
		for _, d := range cg.dirs {
			if strings.HasPrefix(d, c.dir+"/") {
				f := v1
				if c.v2 {
					f = v2
				}
				b, err := os.ReadFile(filepath.Join(d, f))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(b))
			}
		}
		t.Fatalf("no cgroup for %s", ctrl)
		return ""
	}
	if got := read("memory", "memory.limit_in_bytes", "memory.max"); got != "50331648" {
		t.Errorf("memory limit %s", got)
	}
	if got := read("pids", "pids.max", "pids.max"); got != "33" {
		t.Errorf("pids limit %s", got)
	}
	if got := read("cpu", "cpu.cfs_quota_us", "cpu.max"); got != "150000" && got != "150000 100000" {
		t.Errorf("cpu quota %s", got)
	}
	if err := cg.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := cg.Remove(context.Background()); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if left := cgroupRunDirs(t, sup); len(left) != 0 {
		t.Errorf("cgroups left: %v", left)
	}
	// The parent goes once empty; another process's run may keep it.
	for _, c := range sup.ctrls {
		ents, err := os.ReadDir(filepath.Join(c.dir, cgroupParent))
		if err == nil && !slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.IsDir() }) {
			t.Errorf("empty parent cgroup of %s left", c.name)
		}
	}
}

// TestSweepStaleCgroups checks that a run removes the empty run cgroups of
// builders that died (a SIGKILLed builder cannot remove its own), and
// leaves those of live processes alone.
func TestSweepStaleCgroups(t *testing.T) {
	testenv.RequireRoot(t)
	sup := Probe()
	if len(sup.devices) == 0 {
		testenv.Skip(t, "no device cgroup here: %s", sup.Reason)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { live.Process.Kill(); live.Wait() }()
	parent, err := sup.devices[0].ensureParent()
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(parent, ownerPrefix(dead.Process.Pid)+"0000000000000000")
	kept := filepath.Join(parent, ownerPrefix(live.Process.Pid)+"0000000000000000")
	for _, d := range []string{stale, kept} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defer unix.Rmdir(kept)
	defer unix.Rmdir(stale)
	old := time.Now().Add(-2 * staleAge)
	for _, d := range []string{stale, kept} {
		if err := os.Chtimes(d, old, old); err != nil {
			t.Fatal(err)
		}
	}
	young := filepath.Join(parent, ownerPrefix(dead.Process.Pid)+"1111111111111111")
	if err := os.Mkdir(young, 0o755); err != nil {
		t.Fatal(err)
	}
	defer unix.Rmdir(young)
	cg, err := Create(sup, Limits{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead builder's cgroup %s was not swept: %v", stale, err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("a live process's cgroup was removed: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("a dead builder's cgroup younger than %v was removed: %v", staleAge, err)
	}
}

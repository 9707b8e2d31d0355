package cgroup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/internal/testenv"
)

// cgroupRunDirs lists the per-run cgroups left under the builder's parents.
func cgroupRunDirs(t *testing.T, sup Support) []string {
	t.Helper()
	left, err := sup.RunCgroups()
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
	for _, c := range sup.ctrls {
		if _, err := os.Stat(filepath.Join(c.dir, cgroupParent)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("parent cgroup of %s left: %v", c.name, err)
		}
	}
}

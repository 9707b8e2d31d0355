package build

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/build/sandbox/cgroup"
)

// TestBuildDevices builds the Dockerfile, which makes a node for a
// host block device (a loop device on a file holding a secret) and reads or
// writes it: the build fails at the RUN's line in every isolation mode,
// the secret appears nowhere, the file is unchanged and no run cgroup is
// left. Only making the node works, and the image then holds it. On the
// code before the fix, the reads printed the secret and the writes
// succeeded.
func TestBuildDevices(t *testing.T) {
	loop := buildtest.SecretLoop(t)
	sup := cgroup.Probe()
	modes := []struct {
		name string
		sn   string
		mod  func(*Options)
	}{
		{"namespaces", "", func(*Options) {}},
		{"network none", "", func(o *Options) { o.Network = "none" }},
		{"chroot", "naive", func(o *Options) { o.Isolation = IsolationChroot }},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixtureWith(t, m.sn)
			build := func(mode string) (*Result, string, error) {
				return f.build(copyCase(t, "builds/devices"), m.mod, func(o *Options) {
					o.NoCache = true
					o.BuildArgs["MAJOR"] = strconv.Itoa(int(loop.Major))
					o.BuildArgs["MINOR"] = strconv.Itoa(int(loop.Minor))
					o.BuildArgs["MODE"] = mode
				})
			}
			for _, mode := range []string{"read", "write"} {
				_, log, err := build(mode)
				if err == nil {
					t.Errorf("%s: the build succeeded:\n%s", mode, log)
				} else if !strings.Contains(err.Error(), "Dockerfile:6") {
					t.Errorf("%s: error %q does not name Dockerfile:6", mode, err)
				}
				if strings.Contains(log+fmt.Sprint(err), buildtest.Secret) {
					t.Errorf("%s: the host device was read:\n%s", mode, log)
				}
				loop.CheckUnchanged(t)
			}
			res, log, err := build("create")
			if err != nil {
				t.Fatalf("creating a node: %v\n%s", err, log)
			}
			u := unpack(t, res.Image)
			fi, err := os.Lstat(filepath.Join(u.rootfs, "tmp/loop"))
			if err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
				t.Errorf("the image holds no block device at /tmp/loop: %v %v", fi, err)
			}
			if left, err := sup.RunCgroupsOf(os.Getpid()); err != nil || len(left) > 0 {
				t.Errorf("cgroups left: %v %v", left, err)
			}
		})
	}
}

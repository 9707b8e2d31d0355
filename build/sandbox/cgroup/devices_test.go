package cgroup

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/internal/testenv"
)

// requireDeviceFilter stops t (see testenv.Skip) when no cgroup hierarchy
// can hold a device allowlist.
func requireDeviceFilter(t *testing.T, sup Support) {
	t.Helper()
	if sup.DeviceFilter() == "" {
		testenv.Skip(t, "no cgroup hierarchy can hold a device allowlist")
	}
}

// TestDeviceAllowlist checks each device allowlist on its own, v1's devices
// controller and the v2 eBPF program, by running host commands (no nodev
// mount involved) in a run cgroup that has only that allowlist: the host's
// loop device can be neither read nor written, any node can be created,
// and the standard devices work. The same commands outside the cgroup read
// the secret, so the test can fail.
func TestDeviceAllowlist(t *testing.T) {
	testenv.RequireRoot(t)
	loop := buildtest.SecretLoop(t)
	full := Probe()
	requireDeviceFilter(t, full)
	tmp := t.TempDir()
	tests := []struct {
		name, script string
		ok           bool
	}{
		{"read", "head -c 64 " + loop.Path, false},
		{"write", "echo OVERWRITTEN | dd of=" + loop.Path + " conv=notrunc 2>&1", false},
		{"mknod", fmt.Sprintf("mknod %s/node-$$ b %d %d && rm %s/node-$$", tmp, loop.Major, loop.Minor, tmp), true},
		{"standard", "echo x > /dev/null && head -c 3 /dev/zero >/dev/null && head -c 3 /dev/urandom >/dev/null &&" +
			" head -c 3 /dev/random >/dev/null && ! echo x 2>/dev/null >/dev/full", true},
		{"ptmx", "exec 3<>/dev/ptmx", true},
	}
	inCgroup := func(dir, script string) (string, error) {
		cmd := exec.Command("/bin/sh", "-c", `echo $$ > "$1/cgroup.procs" && exec /bin/sh -c "$2"`, "sh", dir, script)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := inCgroup(t.TempDir(), tests[0].script); err != nil || !strings.Contains(out, buildtest.Secret) {
		t.Fatalf("outside any run cgroup, reading the loop device gave %v, %q", err, out)
	}
	for _, c := range full.devices {
		name := "v1"
		if c.v2 {
			name = "v2"
		}
		t.Run(name, func(t *testing.T) {
			cg, err := Create(Support{devices: []ctrl{c}}, Limits{}, true)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := cg.Remove(context.Background()); err != nil {
					t.Error(err)
				}
			}()
			if len(cg.dirs) != 1 {
				t.Fatalf("cgroup dirs %v", cg.dirs)
			}
			for _, tc := range tests {
				out, err := inCgroup(cg.dirs[0], tc.script)
				if (err == nil) != tc.ok {
					t.Errorf("%s: err = %v, want ok = %v (output %q)", tc.name, err, tc.ok, out)
				}
				if strings.Contains(out, buildtest.Secret) {
					t.Errorf("%s: the host device was read: %q", tc.name, out)
				}
				if !tc.ok && !strings.Contains(out, "not permitted") {
					t.Errorf("%s: %q, want EPERM from the allowlist", tc.name, out)
				}
			}
			loop.CheckUnchanged(t)
		})
	}
}

// TestDeviceProgramLoadedOnce checks that the v2 device filter is loaded
// into the kernel once per process and attached to every run's cgroup:
// several cgroups made one after the other, and the last still denies
// reading the host's loop device.
func TestDeviceProgramLoadedOnce(t *testing.T) {
	testenv.RequireRoot(t)
	full := Probe()
	var v2 []ctrl
	for _, c := range full.devices {
		if c.v2 {
			v2 = append(v2, c)
		}
	}
	if len(v2) == 0 {
		testenv.Skip(t, "no cgroup v2 hierarchy can hold a device filter")
	}
	loop := buildtest.SecretLoop(t)
	var last *Group
	for range 3 {
		cg, err := Create(Support{devices: v2}, Limits{}, true)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := cg.Remove(context.Background()); err != nil {
				t.Error(err)
			}
		}()
		last = cg
	}
	deviceProg.Lock()
	loads := deviceProg.loads
	deviceProg.Unlock()
	if loads != 1 {
		t.Errorf("device filter loaded %d times in this process, want once", loads)
	}
	cmd := exec.Command("/bin/sh", "-c", `echo $$ > "$1/cgroup.procs" && exec head -c 64 "$2"`, "sh", last.dirs[0], loop.Path)
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Contains(string(out), buildtest.Secret) || !strings.Contains(string(out), "not permitted") {
		t.Errorf("reading the loop device in the third run cgroup: %v, %q", err, out)
	}
}

// TestDeviceRuleLines checks the allowlist's cgroup v1 rendering.
func TestDeviceRuleLines(t *testing.T) {
	var got []string
	for _, r := range allowedDevices {
		got = append(got, r.v1Line())
	}
	want := "c *:* m|b *:* m|c 1:3 rwm|c 1:5 rwm|c 1:7 rwm|c 1:8 rwm|c 1:9 rwm|c 5:0 rwm|c 5:2 rwm|c 136:* rwm"
	if strings.Join(got, "|") != want {
		t.Errorf("v1 lines\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
}

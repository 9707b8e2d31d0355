package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"builder/build/buildtest"
	"builder/build/sandbox/cgroup"
	"builder/internal/testenv"
	"builder/snapshot"
)

// deviceScripts are the RUN commands that try a host block device through
// a node the command creates itself: reading, writing, and both again in
// /dev. Each prints "created" once mknod succeeds, and must fail. A bind root
// keeps the node of an earlier run, hence the rm.
func deviceScripts(l *buildtest.LoopDevice) []deviceScript {
	node := fmt.Sprintf("b %d %d", l.Major, l.Minor)
	return []deviceScript{
		{"read", "rm -f /tmp/loop && mknod /tmp/loop " + node + " && echo created && head -c 64 /tmp/loop"},
		{"read /dev", "mknod /dev/loopx " + node + " && echo created && head -c 64 /dev/loopx"},
		{"write", "rm -f /tmp/loop && mknod /tmp/loop " + node + " && echo created && echo OVERWRITTEN | dd of=/tmp/loop conv=notrunc"},
		{"write /dev", "mknod /dev/loopx " + node + " && echo created && echo OVERWRITTEN | dd of=/dev/loopx conv=notrunc"},
	}
}

// deviceScript is one of deviceScripts.
type deviceScript struct{ name, script string }

// standardDevices is a RUN command that uses each standard device as a
// build would; it prints "ok" when all of them work.
const standardDevices = `set -e
echo x > /dev/null
test "$(head -c 3 /dev/zero | wc -c)" = 3
test "$(head -c 3 /dev/urandom | wc -c)" = 3
test "$(head -c 3 /dev/random | wc -c)" = 3
! echo x 2>/dev/null > /dev/full
exec 3<>/dev/ptmx
test -e /dev/pts/0
exec 3>&-
# Without a controlling terminal /dev/tty opens with ENXIO, which is not
# a permission error.
msg=$(cat /dev/tty 2>&1) || true
case "$msg" in *"No such device or address"*) ;; *) echo "tty: $msg"; exit 1 ;; esac
echo ok`

// TestDevicesDenied checks that in every isolation mode a RUN can create a
// node for a host block device (except where CAP_MKNOD is dropped) but can
// neither read nor write it, that the device's backing file keeps its
// content, and that the standard devices still work. On the old code, the
// reads printed the secret and the writes changed the file.
func TestDevicesDenied(t *testing.T) {
	needRoot(t)
	loop := buildtest.SecretLoop(t)
	rootfs := newRootfs(t)
	lower := newRootfs(t)
	overlay := func(t *testing.T) []snapshot.Mount {
		return []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{
			"lowerdir=" + lower, "upperdir=" + t.TempDir(), "workdir=" + t.TempDir(),
		}}}
	}
	sup := cgroup.Probe()
	t.Logf("device allowlist: %q", sup.DeviceFilter())
	noCgroups := cgroup.Support{}
	modes := []struct {
		name string
		spec func(t *testing.T) Spec
	}{
		{"namespaces bind", func(t *testing.T) Spec { return Spec{Root: bindRoot(rootfs), Cgroups: &sup} }},
		{"namespaces overlay", func(t *testing.T) Spec { return Spec{Root: overlay(t), Cgroups: &sup} }},
		{"network none", func(t *testing.T) Spec { return Spec{Root: bindRoot(rootfs), Network: "none", Cgroups: &sup} }},
		{"chroot", func(t *testing.T) Spec {
			return Spec{Root: bindRoot(rootfs), Isolation: IsolationChroot, Cgroups: &sup}
		}},
		// Without a device cgroup, the nodev mounts alone must hold.
		{"namespaces nodev only", func(t *testing.T) Spec { return Spec{Root: bindRoot(rootfs), Cgroups: &noCgroups} }},
		{"overlay nodev only", func(t *testing.T) Spec { return Spec{Root: overlay(t), Cgroups: &noCgroups} }},
		{"chroot nodev only", func(t *testing.T) Spec {
			return Spec{Root: bindRoot(rootfs), Isolation: IsolationChroot, Cgroups: &noCgroups}
		}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			for _, ds := range deviceScripts(loop) {
				t.Run(ds.name, func(t *testing.T) {
					spec := m.spec(t)
					out := &buildtest.SyncBuffer{}
					spec.Args, spec.Stdout, spec.Stderr = sh(ds.script), out, out
					err := Run(context.Background(), spec)
					checkDenied(t, err, out.String(), true)
					loop.CheckUnchanged(t)
				})
			}
			t.Run("standard devices", func(t *testing.T) {
				spec := m.spec(t)
				out := &buildtest.SyncBuffer{}
				spec.Args, spec.Stdout, spec.Stderr = sh(standardDevices), out, out
				if err := Run(context.Background(), spec); err != nil || out.String() != "ok\n" {
					t.Fatalf("Run: %v, output %q", err, out.String())
				}
			})
		})
	}
	if left := cgroupRunDirs(t, sup); len(left) != 0 {
		t.Errorf("cgroups left: %v", left)
	}
}

// checkDenied fails t unless the device script failed without showing the
// secret; with created, mknod must have succeeded first.
func checkDenied(t *testing.T, err error, out string, created bool) {
	t.Helper()
	if err == nil {
		t.Errorf("the script succeeded: %q", out)
	}
	if strings.Contains(out, buildtest.Secret) {
		t.Errorf("the host device was read: %q", out)
	}
	if created && !strings.HasPrefix(out, "created\n") {
		t.Errorf("mknod failed, but creating a node is allowed: %q", out)
	}
	if !created && strings.Contains(out, "created") {
		t.Errorf("mknod succeeded without CAP_MKNOD: %q", out)
	}
}

// TestDevicesInsecure checks the documented exception: RUN
// --security=insecure may use every device, as in BuildKit.
func TestDevicesInsecure(t *testing.T) {
	needRoot(t)
	loop := buildtest.SecretLoop(t)
	out := &buildtest.SyncBuffer{}
	err := Run(context.Background(), Spec{Root: bindRoot(newRootfs(t)), Insecure: true, Stdout: out, Stderr: out,
		Args: sh(deviceScripts(loop)[0].script)})
	if err != nil || !strings.Contains(out.String(), buildtest.Secret) {
		t.Fatalf("Run: %v, output %q; want the device readable", err, out.String())
	}
}

// TestDevicesChrootNoMountNamespace runs chroot mode where no mount
// namespace can be made (the test binary again, without CAP_SYS_ADMIN):
// nothing can be remounted nodev there, so the command must not get
// CAP_MKNOD, and its mknod fails.
func TestDevicesChrootNoMountNamespace(t *testing.T) {
	needRoot(t)
	loop := buildtest.SecretLoop(t)
	rootfs := newRootfs(t)
	for _, ds := range deviceScripts(loop) {
		if strings.Contains(ds.name, "/dev") {
			continue // no /dev without a mount namespace
		}
		t.Run(ds.name, func(t *testing.T) {
			out, err := runWithoutSysAdmin(t, "^TestDevicesChrootHelper$", "SANDBOX_TEST_DEVICE_ROOT="+rootfs,
				"SANDBOX_TEST_DEVICE_SCRIPT="+ds.script)
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			var res deviceResult
			for _, l := range strings.Split(string(out), "\n") {
				if j, ok := strings.CutPrefix(l, "RESULT "); ok {
					if err := json.Unmarshal([]byte(j), &res); err != nil {
						t.Fatal(err)
					}
				}
			}
			if !res.Done {
				t.Fatalf("helper output:\n%s", out)
			}
			var runErr error
			if res.Err != "" {
				runErr = errors.New(res.Err)
			}
			checkDenied(t, runErr, res.Output, false)
			loop.CheckUnchanged(t)
		})
	}
}

// runWithoutSysAdmin runs the test binary's test run with CAP_SYS_ADMIN
// dropped from the bounding set, so that no new mount namespace is allowed
// (see TestProbeWithoutSysAdmin), and returns its output.
func runWithoutSysAdmin(t *testing.T, run string, env ...string) ([]byte, error) {
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is not unlocked: it exits with its reduced bounding
		// set instead of going back to the pool.
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_ADMIN, 0, 0, 0); err != nil {
			ch <- result{err: err}
			return
		}
		cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		ch <- result{out, err}
	}()
	r := <-ch
	return r.out, r.err
}

// deviceResult is what TestDevicesChrootHelper reports.
type deviceResult struct {
	Done   bool
	Err    string
	Output string
}

// TestDevicesChrootHelper is TestDevicesChrootNoMountNamespace's child; it
// does nothing unless started by it. It prints "RESULT " and a
// deviceResult.
func TestDevicesChrootHelper(t *testing.T) {
	root := os.Getenv("SANDBOX_TEST_DEVICE_ROOT")
	if root == "" {
		t.Skip("helper for TestDevicesChrootNoMountNamespace")
	}
	out := &buildtest.SyncBuffer{}
	err := Run(context.Background(), Spec{Root: bindRoot(root), Isolation: IsolationChroot, Stdout: out, Stderr: out,
		TempDir: t.TempDir(), Args: sh(os.Getenv("SANDBOX_TEST_DEVICE_SCRIPT"))})
	if _, statErr := os.Lstat(filepath.Join(root, "proc")); statErr == nil {
		t.Errorf("the run had /proc: it had a mount namespace")
	}
	res := deviceResult{Done: true, Output: out.String()}
	if err != nil {
		res.Err = err.Error()
	}
	j, _ := json.Marshal(res)
	fmt.Fprintf(os.Stdout, "\nRESULT %s\n", j)
}

// requireDeviceFilter stops t (see testenv.Skip) when no cgroup hierarchy
// can hold a device allowlist.
func requireDeviceFilter(t *testing.T, sup cgroup.Support) {
	t.Helper()
	if sup.DeviceFilter() == "" {
		testenv.Skip(t, "no cgroup hierarchy can hold a device allowlist")
	}
}

// TestDeviceCgroupLifecycle checks that a run with no limits is put in a
// device cgroup in every hierarchy that can hold one, that an insecure run
// is not, and that no cgroup is left after a run that succeeds, fails or is
// cancelled.
func TestDeviceCgroupLifecycle(t *testing.T) {
	needRoot(t)
	sup := cgroup.Probe()
	requireDeviceFilter(t, sup)
	rootfs := newRootfs(t)
	run := func(ctx context.Context, script string, insecure bool) (string, error) {
		out := &buildtest.SyncBuffer{}
		err := Run(ctx, Spec{Root: bindRoot(rootfs), Args: sh(script), Stdout: out, Stderr: out, Cgroups: &sup,
			Insecure: insecure})
		return out.String(), err
	}
	out, err := run(context.Background(), "cat /proc/self/cgroup", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range strings.Split(sup.DeviceFilter(), "+") {
		want := map[string]string{"v1": ":devices:/", "v2": "0::/"}[v]
		if !strings.Contains(out, want) || !strings.Contains(out, "/builder-run/") {
			t.Errorf("%s: the run is in no device cgroup:\n%s", v, out)
		}
	}
	if out, err := run(context.Background(), "cat /proc/self/cgroup", true); err != nil || strings.Contains(out, "/builder-run/") {
		t.Errorf("insecure run: %v, in a run cgroup:\n%s", err, out)
	}
	if left := cgroupRunDirs(t, sup); len(left) != 0 {
		t.Errorf("cgroups left after success: %v", left)
	}
	if _, err := run(context.Background(), "exit 3", false); err == nil {
		t.Error("exit 3 succeeded")
	}
	if left := cgroupRunDirs(t, sup); len(left) != 0 {
		t.Errorf("cgroups left after failure: %v", left)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := run(ctx, "sleep 304.5 & sleep 304.25", false)
		errc <- err
	}()
	waitFor(t, "the command", func() bool { return len(processesWithArg("304.25")) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run: %v", err)
	}
	if left := cgroupRunDirs(t, sup); len(left) != 0 {
		t.Errorf("cgroups left after cancellation: %v", left)
	}
	if p := append(processesWithArg("304.5"), processesWithArg("304.25")...); len(p) != 0 {
		t.Errorf("processes left: %v", p)
	}
}

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"builder/build/buildtest"
	"builder/build/sandbox/cgroup"
	"builder/internal/testenv"
)

// TestChrootRun runs commands in chroot isolation on a plain directory:
// they see the root, write into it, cannot chroot out of it, keep the host's
// hostname (no UTS namespace) and leave no process behind.
func TestChrootRun(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	tmp := t.TempDir()
	host, _ := os.Hostname()
	tests := []struct {
		name, script, want string
		fail               bool
	}{
		{"writes land in the root", `echo hi > /root/out && cat /root/out`, "hi\n", false},
		{"sees only the root", `ls /`, "bin\netc\nroot\ntmp\n", false},
		{"no CAP_SYS_CHROOT", `mkdir -p /tmp/x && chroot /tmp/x /bin/true`, "", true},
		{"host hostname", `hostname`, host + "\n", false},
		{"env is clean", `env | sort`, "HOME=/root\nPATH=" + DefaultPath + "\nPWD=/\nSHLVL=1\n", false},
		{"fds 0-2 only", `ls /proc/self/fd | sort`, "0\n1\n2\n3\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := &buildtest.SyncBuffer{}
			err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Args: sh(tc.script), Stdout: out, Stderr: out,
				TempDir: tmp, Isolation: IsolationChroot})
			if tc.fail {
				if err == nil {
					t.Fatalf("succeeded: %q", out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v (output %q)", err, out.String())
			}
			got := out.String()
			if tc.name == "sees only the root" {
				// /proc, /dev and /sys stubs exist during the run.
				got = filterLines(got, "dev", "proc", "sys")
			}
			if got != tc.want {
				t.Errorf("output %q, want %q", got, tc.want)
			}
		})
	}
	// The stubs for /proc, /dev and /sys are gone, the file stays.
	if b, err := os.ReadFile(filepath.Join(rootfs, "root/out")); err != nil || string(b) != "hi\n" {
		t.Errorf("root/out = %q, %v", b, err)
	}
	for _, p := range []string{"proc", "dev", "sys", "etc/hosts"} {
		if _, err := os.Lstat(filepath.Join(rootfs, p)); err == nil {
			t.Errorf("stub %s left in the root", p)
		}
	}
	checkScratch(t, tmp)
}

func filterLines(s string, drop ...string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !contains(drop, strings.TrimSuffix(l, "\n")) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestChrootKillsTree checks that a chroot-mode run, which has no PID
// namespace to die with, still leaves no process: neither one the command
// left running in the background, nor, after cancellation, the command.
func TestChrootKillsTree(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	if err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Isolation: IsolationChroot,
		Args: sh("(sleep 300.25 &) ; sleep 300.5 & echo started")}); err != nil {
		t.Fatal(err)
	}
	if p := append(processesWithArg("300.25"), processesWithArg("300.5")...); len(p) != 0 {
		t.Errorf("processes left after exit: %v", p)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &buildtest.SyncBuffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Spec{Root: bindRoot(rootfs), Isolation: IsolationChroot, Stdout: out,
			Args: sh("(sleep 301.25 &); echo started; sleep 301.5")})
	}()
	waitFor(t, "the command", func() bool {
		return out.String() == "started\n" && len(processesWithArg("301.5")) == 1 && len(processesWithArg("301.25")) == 1
	})
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run error = %v, want context.Canceled", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if p := append(processesWithArg("301.25"), processesWithArg("301.5")...); len(p) != 0 {
		t.Errorf("processes left after cancel: %v", p)
	}
	if p := initPids(t); len(p) != 0 {
		t.Errorf("inits left: %v", p)
	}
}

func TestChrootNeedsDirectoryRoot(t *testing.T) {
	_, err := newConfig(Spec{Root: nil, Args: []string{"true"}, Isolation: IsolationChroot})
	if err == nil {
		t.Fatal("no root accepted")
	}
	_, err = newConfig(Spec{Args: []string{"true"}, Isolation: IsolationChroot,
		Root: bindRoot("/x")[:1:1]})
	if err != nil {
		t.Fatalf("bind root refused: %v", err)
	}
	ov := bindRoot("/x")
	ov[0].Type = "overlay"
	if _, err := newConfig(Spec{Root: ov, Args: []string{"true"}, Isolation: IsolationChroot}); err == nil {
		t.Fatal("overlay root accepted in chroot mode")
	}
	if _, err := newConfig(Spec{Root: bindRoot("/x"), Args: []string{"true"}, Isolation: "jail"}); err == nil {
		t.Fatal("unknown isolation accepted")
	}
}

func TestProbe(t *testing.T) {
	needRoot(t)
	mode, reason := Probe(context.Background())
	if mode != IsolationNamespaces {
		t.Fatalf("Probe as root = %s (%s), want namespaces", mode, reason)
	}
	if !ProbePIDNamespace(context.Background()) {
		t.Error("ProbePIDNamespace as root = false")
	}
}

// probeReport is what the unprivileged helper reports.
type probeReport struct {
	Mode, Reason string
	PIDNS        bool
	RunErr       string
	Output       string
	RootFile     string
}

// TestProbeWithoutSysAdmin re-executes the test binary without
// CAP_SYS_ADMIN (dropped from the bounding set of the forking thread, so
// root's exec gets none) as a stand-in for an unprivileged pod: there,
// Probe must pick chroot and say why, and a chroot-mode run must work
// without any mount and without /proc or /dev.
func TestProbeWithoutSysAdmin(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
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
		cmd := exec.Command(os.Args[0], "-test.run=^TestUnprivilegedHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SANDBOX_TEST_HELPER_ROOT="+rootfs)
		out, err := cmd.CombinedOutput()
		ch <- result{out, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("helper: %v\n%s", r.err, r.out)
	}
	var rep probeReport
	line := ""
	for _, l := range strings.Split(string(r.out), "\n") {
		if s, ok := strings.CutPrefix(l, "REPORT "); ok {
			line = s
		}
	}
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Fatalf("helper output: %v\n%s", err, r.out)
	}
	if rep.Mode != IsolationChroot || !strings.Contains(rep.Reason, "EPERM") {
		t.Errorf("Probe without CAP_SYS_ADMIN = %q (%q), want chroot because of EPERM", rep.Mode, rep.Reason)
	}
	if rep.PIDNS {
		t.Error("ProbePIDNamespace without CAP_SYS_ADMIN = true")
	}
	if rep.RunErr != "" {
		t.Fatalf("chroot run: %s", rep.RunErr)
	}
	if rep.Output != "no proc\nno dev\nbuilt\n" || rep.RootFile != "built\n" {
		t.Errorf("chroot run output %q, file %q", rep.Output, rep.RootFile)
	}
}

// TestUnprivilegedHelper is TestProbeWithoutSysAdmin's child; it does
// nothing unless started by it.
func TestUnprivilegedHelper(t *testing.T) {
	root := os.Getenv("SANDBOX_TEST_HELPER_ROOT")
	if root == "" {
		t.Skip("helper for TestProbeWithoutSysAdmin")
	}
	var rep probeReport
	rep.Mode, rep.Reason = Probe(context.Background())
	rep.PIDNS = ProbePIDNamespace(context.Background())
	out := &buildtest.SyncBuffer{}
	err := Run(context.Background(), Spec{Root: bindRoot(root), Isolation: IsolationChroot, Stdout: out, Stderr: out,
		TempDir: t.TempDir(),
		Args:    sh(`test -e /proc/self || echo no proc; test -e /dev/null || echo no dev; echo built > /root/built; cat /root/built`)})
	if err != nil {
		rep.RunErr = err.Error()
	}
	rep.Output = out.String()
	b, _ := os.ReadFile(filepath.Join(root, "root/built"))
	rep.RootFile = string(b)
	j, _ := json.Marshal(rep)
	t.Logf("REPORT %s", j)
	os.Stdout.WriteString("\nREPORT " + string(j) + "\n")
}

// cgroupRunDirs lists the per-run cgroups this test process made that are
// still there (other processes may be building at the same time).
func cgroupRunDirs(t *testing.T, sup cgroup.Support) []string {
	t.Helper()
	left, err := sup.RunCgroupsOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return left
}

func TestLimits(t *testing.T) {
	needRoot(t)
	sup := cgroup.Probe()
	if !sup.Supports(cgroup.Limits{Memory: 1, CPUs: 1, Pids: 1}) {
		testenv.Skip(t, "cgroups not usable here: %s", sup.Reason)
	}
	t.Logf("cgroups: %s", sup.Version())
	rootfs := newRootfs(t)
	tests := []struct {
		name   string
		limits cgroup.Limits
		script string
		check  func(t *testing.T, out string, err error)
	}{
		{"pids limit stops a fork loop", cgroup.Limits{Pids: 20}, `for i in $(seq 1 100); do sleep 302.5 & done; echo survived`,
			func(t *testing.T, out string, err error) {
				var ee *ExitError
				if !errors.As(err, &ee) || ee.OOMKilled {
					t.Fatalf("err = %v, want a plain exit error", err)
				}
				if strings.Contains(out, "survived") || !strings.Contains(out, "fork") {
					t.Errorf("output %q, want a fork failure", out)
				}
			}},
		{"memory limit OOM-kills", cgroup.Limits{Memory: 32 << 20}, `echo start; dd if=/dev/zero of=/dev/null bs=64M count=1`,
			func(t *testing.T, out string, err error) {
				var ee *ExitError
				if !errors.As(err, &ee) || !ee.OOMKilled || ee.Code != 137 {
					t.Fatalf("err = %v, output %q: want an OOM kill (137)", err, out)
				}
				if !strings.Contains(err.Error(), "out of memory") || !strings.Contains(err.Error(), "32 MiB") {
					t.Errorf("error %q does not say out of memory and the limit", err)
				}
			}},
		// --pids-limit N counts the command's processes, not the init's.
		{"pids limit 1 runs a shell", cgroup.Limits{Pids: 1}, `echo ok`,
			func(t *testing.T, out string, err error) {
				if err != nil || out != "ok\n" {
					t.Fatalf("err = %v, output %q", err, out)
				}
			}},
		{"pids limit 4 runs a shell and three children", cgroup.Limits{Pids: 4}, `sleep 302.5 & sleep 302.5 & sleep 302.5 & echo ok`,
			func(t *testing.T, out string, err error) {
				if err != nil || out != "ok\n" {
					t.Fatalf("err = %v, output %q", err, out)
				}
			}},
		{"within limits", cgroup.Limits{Memory: 64 << 20, CPUs: 0.5, Pids: 50}, `dd if=/dev/zero of=/dev/null bs=1M count=4 2>/dev/null && echo ok`,
			func(t *testing.T, out string, err error) {
				if err != nil || out != "ok\n" {
					t.Fatalf("err = %v, output %q", err, out)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := &buildtest.SyncBuffer{}
			err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Args: sh(tc.script), Stdout: out, Stderr: out,
				Limits: tc.limits, Cgroups: &sup})
			tc.check(t, out.String(), err)
			if p := processesWithArg("302.5"); len(p) != 0 {
				t.Errorf("processes left: %v", p)
			}
			if left := cgroupRunDirs(t, sup); len(left) != 0 {
				t.Errorf("cgroups left: %v", left)
			}
		})
	}
}

func TestLimitsUnsupported(t *testing.T) {
	sup := cgroup.Support{Reason: "no cgroup hierarchy"}
	err := Run(context.Background(), Spec{Root: bindRoot(t.TempDir()), Args: []string{"true"}, Limits: cgroup.Limits{Pids: 5}, Cgroups: &sup})
	if err == nil || !strings.Contains(err.Error(), "no cgroup hierarchy") {
		t.Fatalf("Run = %v, want a cgroups error", err)
	}
}

// TestChrootSignals runs chroot-mode commands next to host processes (a
// root sentinel with a secret in its command line, in a process group of
// its own, and one of another user), with and without a PID namespace.
// Signal 0 only checks permission, so nothing dies even on a filter that
// lets it through. Both ways, signals to every process and to another
// process group are refused, while the command's own group and its own
// children stay reachable. With the PID namespace, host processes are out
// of sight and reach; without it, a host pid can still be signalled (the
// limit IsolationChroot states), and there is no /proc to read their
// command lines from.
func TestChrootSignals(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	start := func(cred *syscall.Credential) int {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", "sleep 303.75; :", "sentinel", "--password=canary")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		t.Cleanup(func() {
			_ = syscall.Kill(-pid, syscall.SIGKILL) // its own group: the sentinel and its sleep
			_ = cmd.Wait()
		})
		return pid
	}
	root := start(nil)
	nobody := start(&syscall.Credential{Uid: 65534, Gid: 65534})
	script := `try() { if out=$("$@" 2>&1); then echo "$*: ok"; else echo "$*: ${out##*: }"; fi; }
try kill -0 -1
try kill -0 -$ROOT
try kill -0 $ROOT
try kill -0 0
try kill -0 -$$
sleep 10 & kill $!; wait $!; echo "job: $?"
if grep -q canary /proc/$ROOT/cmdline 2>/dev/null; then echo "cmdline: read"; else echo "cmdline: hidden"; fi
test -e /proc/$NOBODY && echo "other user: visible" || echo "other user: hidden"
`
	tests := []struct {
		name    string
		noPIDNS bool
		want    string
	}{
		{"pid namespace", false, "kill -0 -1: Operation not permitted\nkill -0 -R: Operation not permitted\n" +
			"kill -0 R: No such process\nkill -0 0: ok\nkill -0 -OWN: ok\njob: 143\ncmdline: hidden\nother user: hidden\n"},
		{"no pid namespace", true, "kill -0 -1: Operation not permitted\nkill -0 -R: Operation not permitted\n" +
			"kill -0 R: ok\nkill -0 0: ok\nkill -0 -OWN: ok\njob: 143\ncmdline: hidden\nother user: hidden\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb buildtest.SyncBuffer
			err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Isolation: IsolationChroot,
				Args: sh(script), Stdout: &out, Stderr: &errb, TempDir: t.TempDir(), noPIDNamespace: tt.noPIDNS,
				Env: []string{"ROOT=" + strconv.Itoa(root), "NOBODY=" + strconv.Itoa(nobody)}})
			if err != nil {
				t.Fatalf("Run: %v\n%s%s", err, out.String(), errb.String())
			}
			got := strings.ReplaceAll(out.String(), strconv.Itoa(root), "R")
			// The command's own group, by its number (in its PID namespace).
			got = regexp.MustCompile(`kill -0 -[0-9]+: ok`).ReplaceAllString(got, "kill -0 -OWN: ok")
			if got != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s\nstderr: %s", got, tt.want, errb.String())
			}
		})
	}
}

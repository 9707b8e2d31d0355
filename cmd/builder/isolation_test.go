package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"builder/build/buildtest"
)

// TestCLIUnprivilegedContainer runs a whole build the way a Kubernetes pod
// without privileges would: CAP_SYS_ADMIN is dropped from the bounding set,
// so no mount namespace and no mount is allowed. builder must notice, say
// it chose chroot isolation, and still pull, COPY, RUN and export; a RUN
// --mount, which needs mounts, fails clearly.
func TestCLIUnprivilegedContainer(t *testing.T) {
	buildtest.RequireRoot(t)
	setpriv := buildtest.RequireTool(t, "setpriv")
	base := buildtest.BusyboxRegistry(t)
	root, out := t.TempDir(), t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nCOPY hi.txt /hi.txt\nRUN cat /hi.txt > /out && echo ran >> /out\nWORKDIR /app\nRUN pwd >> /out\n",
		map[string]string{"hi.txt": "hi\n"})
	run := func(args ...string) (string, int) {
		cmd := exec.Command(setpriv, append([]string{"--bounding-set", "-sys_admin", binary, "--root", root}, args...)...)
		b, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(b), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(b), 0
	}
	log, code := run("build", "--progress=plain", "-o", "type=local,dest="+out, ctx)
	if code != 0 {
		t.Fatalf("build without CAP_SYS_ADMIN: exit %d\n%s", code, log)
	}
	if !strings.Contains(log, "WARNING: isolation: chroot (new namespaces are not permitted: EPERM): RUN steps are not a security boundary") ||
		!strings.Contains(log, "can signal any host process by its pid") {
		t.Errorf("the build does not say it chose chroot isolation and why:\n%s", log)
	}
	got, err := os.ReadFile(filepath.Join(out, "out"))
	if err != nil || string(got) != "hi\nran\n/app\n" {
		t.Errorf("/out = %q, %v; want the COPY's file, the RUN's line and the WORKDIR", got, err)
	}
	// The same store, now cached: every step CACHED.
	if log, code := run("build", "--progress=plain", ctx); code != 0 || strings.Count(log, "CACHED") != 4 {
		t.Errorf("rebuild without CAP_SYS_ADMIN: exit %d, want the 4 steps after FROM CACHED\n%s", code, log)
	}
	bad := writeCase(t, "FROM "+base+"\nRUN --mount=type=cache,target=/c true\n", map[string]string{})
	log, code = run("build", bad)
	if code != 1 || !strings.Contains(log, "RUN --mount needs mounts, which this machine does not permit (chroot isolation)") {
		t.Errorf("RUN --mount in chroot mode: exit %d\n%s", code, log)
	}
	if m := buildtest.Mounts(t, root); len(m) > 0 {
		t.Errorf("mounts left: %q", m)
	}
}

// TestCLIChrootBuilderKilled: in chroot isolation there is no PID namespace
// to take a RUN's processes down with it, so when builder itself is
// SIGKILLed mid-RUN, the init must still kill the whole tree.
func TestCLIChrootBuilderKilled(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	marker := strconv.Itoa(30000 + os.Getpid()%10000) // sleep's argument names our processes
	ctx := writeCase(t, "FROM "+base+"\nRUN sleep "+marker+" & sleep "+marker+"\n", map[string]string{})
	cmd := exec.Command(binary, "--root", t.TempDir(), "--snapshotter", "naive", "build", "--isolation=chroot", "--progress=plain", ctx)
	var out buildtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sleepers := func() []int {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if strings.Join(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), " ") == "sleep "+marker {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(sleepers()) < 2 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the RUN's two sleeps never started:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	deadline = time.Now().Add(10 * time.Second)
	for {
		left := sleepers()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL) // ours: they carry the marker
			}
			t.Fatalf("RUN processes %v outlived the SIGKILLed builder", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chrootSentinelScript runs "$@" (a builder command) as PID 1's child in
// the PID namespace of unshare(1), next to a sentinel: a root process in a
// session of its own with a secret in its command line, started after
// enough others that its pid is not one a RUN's own PID namespace reuses.
// The build gets the sentinel's pid as the build arg SENTINEL; afterwards
// the script says whether the sentinel lived, kills its group and exits
// with the builder's status. Leaving the namespace kills whatever is left.
const chrootSentinelScript = `i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done
setsid /bin/sh -c 'sleep 300; :' sentinel --password=canary &
export SENTINEL=$!
"$@"
rc=$?
kill -0 $SENTINEL && echo SENTINEL-ALIVE
kill -9 -$SENTINEL
exit $rc
`

// TestCLIChrootSignals builds in chroot isolation inside a private PID
// namespace (unshare --pid --fork --mount-proc) next to a sentinel, so that
// a RUN that reaches past its sandbox kills only that namespace. With a
// PID namespace of its own (forced chroot as root), "kill -9 -1" and
// "kill -9 SENTINEL" leave the sentinel and the builder alive and its
// command line is unreadable. Without one (CAP_SYS_ADMIN dropped, so auto
// picks chroot), the seccomp filter refuses "kill -9 -1" and signals to
// the sentinel's process group with EPERM, while the RUN's own group (by 0
// and by its number) and children stay reachable (job control works).
func TestCLIChrootSignals(t *testing.T) {
	buildtest.RequireRoot(t)
	unshare := buildtest.RequireTool(t, "unshare")
	setpriv := buildtest.RequireTool(t, "setpriv")
	buildtest.RequireTool(t, "setsid")
	base := buildtest.BusyboxRegistry(t)
	tests := []struct {
		name       string
		prefix     []string // before the builder binary
		isolation  string
		dockerfile string
		note       string
		files      map[string]string
	}{
		{
			name:      "pid namespace",
			isolation: "--isolation=chroot",
			dockerfile: "FROM " + base + "\nARG SENTINEL\nRUN kill -9 -1 || true\nRUN kill -9 $SENTINEL || true\n" +
				"RUN kill -9 -$SENTINEL || true\nRUN (cat /proc/$SENTINEL/cmdline || echo unreadable) > /cmdline 2>&1; echo done > /done\n",
			note:  "a PID namespace keeps host processes out of their sight and reach",
			files: map[string]string{"done": "done\n"},
		},
		{
			name:      "no pid namespace",
			prefix:    []string{setpriv, "--bounding-set", "-sys_admin"},
			isolation: "--isolation=auto",
			// Without a mount namespace RUN has no /dev, and a non-interactive
			// shell opens /dev/null for a background job's stdin: the job
			// step makes a plain file there first.
			dockerfile: "FROM " + base + "\nARG SENTINEL\nRUN kill -9 -1; echo \"kill -1: $?\" > /kill\n" +
				"RUN kill -9 -$SENTINEL; echo \"kill group: $?\" >> /kill\n" +
				"RUN mkdir -p /dev && : > /dev/null; sleep 10 & p=$!; sleep 0.3; kill $p; echo \"kill job: $?\" >> /kill; wait $p; echo \"job: $?\" >> /kill; kill -0 0 && echo \"own group: ok\" >> /kill; kill -0 -$$ && echo \"own group by number: ok\" >> /kill\n" +
				"RUN (cat /proc/$SENTINEL/cmdline || echo unreadable) > /cmdline 2>&1; echo done > /done\n",
			note: "can signal any host process by its pid",
			files: map[string]string{"done": "done\n",
				"kill": "kill -1: 1\nkill group: 1\nkill job: 0\njob: 143\nown group: ok\nown group by number: ok\n"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, out := t.TempDir(), t.TempDir()
			ctx := writeCase(t, tc.dockerfile, map[string]string{})
			args := append([]string{"--pid", "--fork", "--mount-proc", "/bin/sh", "-c", chrootSentinelScript, "sh"}, tc.prefix...)
			args = append(args, binary, "--root", dir, "--snapshotter", "naive", "build", tc.isolation, "--progress=plain",
				"--build-arg", "SENTINEL", "-o", "type=local,dest="+out, ctx)
			cmd := exec.Command(unshare, args...)
			var log buildtest.SyncBuffer
			cmd.Stdout, cmd.Stderr = &log, &log
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("build in a PID namespace: %v\n%s", err, log.String())
				}
			case <-time.After(3 * time.Minute):
				cmd.Process.Kill() // unshare's child, PID 1, takes the namespace down
				<-done
				t.Fatalf("build did not finish:\n%s", log.String())
			}
			if !strings.Contains(log.String(), "SENTINEL-ALIVE") {
				t.Errorf("the sentinel died:\n%s", log.String())
			}
			if !strings.Contains(log.String(), tc.note) {
				t.Errorf("the build does not warn %q:\n%s", tc.note, log.String())
			}
			b, err := os.ReadFile(filepath.Join(out, "cmdline"))
			if err != nil || strings.Contains(string(b), "canary") {
				t.Errorf("/cmdline = %q, %v: the RUN read the sentinel's command line", b, err)
			}
			for name, want := range tc.files {
				if b, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(b) != want {
					t.Errorf("/%s = %q, %v; want %q", name, b, err, want)
				}
			}
		})
	}
}

// TestCLIAutoIsolation checks what --isolation=auto picks: namespaces on
// this machine (no warning; RUN has a UTS namespace with builder's
// hostname), and chroot once CAP_SYS_ADMIN is dropped from the bounding
// set, with the warning (RUN keeps the host's hostname).
func TestCLIAutoIsolation(t *testing.T) {
	buildtest.RequireRoot(t)
	setpriv := buildtest.RequireTool(t, "setpriv")
	base := buildtest.BusyboxRegistry(t)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	ctx := writeCase(t, "FROM "+base+"\nRUN hostname > /hostname\n", map[string]string{})
	tests := []struct {
		name     string
		prefix   []string
		hostname string
		warned   bool
	}{
		{"namespaces", nil, "builder", false},
		{"chroot without CAP_SYS_ADMIN", []string{setpriv, "--bounding-set", "-sys_admin"}, host, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			argv := append(append([]string{}, tc.prefix...), binary, "--root", t.TempDir(), "--snapshotter", "naive",
				"build", "--progress=plain", "-o", "type=local,dest="+out, ctx)
			name, args := argv[0], argv[1:]
			b, err := exec.Command(name, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("build: %v\n%s", err, b)
			}
			if warned := strings.Contains(string(b), "WARNING: isolation: chroot"); warned != tc.warned {
				t.Errorf("chroot warning printed: %t, want %t\n%s", warned, tc.warned, b)
			}
			if got, err := os.ReadFile(filepath.Join(out, "hostname")); err != nil || string(got) != tc.hostname+"\n" {
				t.Errorf("RUN hostname = %q, %v; want %q", got, err, tc.hostname)
			}
		})
	}
}

// TestCLICachedBuildProbesNothing checks that a fully cached build decides
// no isolation (issue 19: the probe, a re-exec of the binary in new
// namespaces, ran on every build): on an overlay store, a rebuild without
// CAP_SYS_ADMIN, where the probe picks chroot isolation, which the overlay
// snapshotter cannot serve, succeeds with every step CACHED, while a build
// with a step to run fails at that step and says why.
func TestCLICachedBuildProbesNothing(t *testing.T) {
	buildtest.RequireRoot(t)
	setpriv := buildtest.RequireTool(t, "setpriv")
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nRUN echo one > /one\nCOPY hi.txt /hi.txt\n", map[string]string{"hi.txt": "hi\n"})
	if out, code := cli(t, "--root", root, "--snapshotter", "overlay", "build", "--progress=plain", ctx); code != 0 {
		t.Fatalf("first build: exit %d\n%s", code, out)
	}
	unprivileged := func(dir string) (string, int) {
		cmd := exec.Command(setpriv, "--bounding-set", "-sys_admin", binary, "--root", root, "build", "--progress=plain", dir)
		b, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(b), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(b), 0
	}
	if out, code := unprivileged(ctx); code != 0 || strings.Count(out, "CACHED") != 2 || strings.Contains(out, "isolation") {
		t.Errorf("cached rebuild without CAP_SYS_ADMIN: exit %d, want 0 with both steps CACHED and no isolation chosen\n%s", code, out)
	}
	miss := writeCase(t, "FROM "+base+"\nRUN echo two > /two\n", map[string]string{})
	if out, code := unprivileged(miss); code == 0 || !strings.Contains(out, "chroot isolation needs the naive snapshotter") {
		t.Errorf("build with a RUN to run without CAP_SYS_ADMIN on an overlay store: exit %d, want the snapshotter error\n%s", code, out)
	}
}

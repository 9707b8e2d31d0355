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

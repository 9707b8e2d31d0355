package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"builder/build/buildtest"
	"builder/build/sandbox/cgroup"
)

// binary is the builder binary the tests run, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "builder-cli-test-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "builder")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		panic("build builder: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs builder with args and returns its combined output and exit code.
func cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return cliWith(t, nil, nil, args...)
}

// writeCase writes a Dockerfile (and files) into a new context directory.
func writeCase(t *testing.T, dockerfile string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files["Dockerfile"] = dockerfile
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCLIUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"frobnicate"},
		{"build"},
		{"build", "--no-such-flag", "."},
		{"build", "-o", "type=nope,dest=x", "."},
	} {
		out, code := cli(t, append([]string{"--root", t.TempDir()}, args...)...)
		if code != 2 {
			t.Errorf("builder %q: exit %d, want 2\n%s", args, code, out)
		}
	}
}

func TestCLIBuildImagesAndErrors(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nCOPY hi.sh /hi.sh\nENTRYPOINT [\"/hi.sh\"]\n", map[string]string{"hi.sh": "#!/bin/sh\necho hi\n"})
	out, code := cli(t, "--root", root, "build", "-t", "app", "-o", "type=oci,dest="+filepath.Join(t.TempDir(), "app.tar"), ctx)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	out, code = cli(t, "--root", root, "build", "-t", "app", ctx)
	if code != 0 || strings.Count(out, "CACHED") != 2 {
		t.Errorf("rebuild: exit %d, want every step CACHED\n%s", code, out)
	}
	out, _ = cli(t, "--root", root, "images", "--digests")
	if !regexp.MustCompile(`(?m)^app\s+latest\s+sha256:[0-9a-f]{64}\s+[0-9a-f]{12}\s`).MatchString(out) {
		t.Errorf("images does not list app with its digest:\n%s", out)
	}

	// A failing RUN: exit 1, the file:line, the command, its exit code and output.
	bad := writeCase(t, "FROM "+base+"\nRUN echo about to fail; exit 7\n", map[string]string{})
	out, code = cli(t, "--root", root, "build", bad)
	if code != 1 || !strings.Contains(out, "Dockerfile:2: RUN echo about to fail; exit 7: exit code: 7") || !strings.Contains(out, "> about to fail") {
		t.Errorf("failing RUN: exit %d\n%s", code, out)
	}
	if m := buildtest.Mounts(t, root); len(m) > 0 {
		t.Errorf("mounts left: %q", m)
	}
}

// TestCLIInterrupt sends SIGINT during a long RUN: builder must stop
// promptly, kill the RUN's processes, leave nothing mounted, and the next
// build on the store must succeed.
// TestCLIInterrupt sends SIGINT to a build during a long RUN whose shell
// also left a process in the background, in each isolation mode (chroot
// has no PID namespace to take the tree down, and runs under a cgroup
// here): builder exits 130 and leaves no RUN process, no mount in the
// host's mount table (under the store or its temp dir), no temp dir and
// no per-run cgroup, and the store still builds.
func TestCLIInterrupt(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	for _, tc := range []struct {
		name   string
		args   []string
		marker string
	}{
		{"namespaces", nil, "4242"},
		{"chroot", []string{"--isolation=chroot", "--pids-limit=100"}, "4252"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, tmp := t.TempDir(), t.TempDir()
			ctx := writeCase(t, "FROM "+base+"\nRUN sleep "+tc.marker+".5 & echo started; sleep "+tc.marker+"\n", map[string]string{})
			cmd := exec.Command(binary, append([]string{"--root", root, "build"}, append(tc.args, ctx)...)...)
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			var out buildtest.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for !(strings.Contains(out.String(), "started") && len(processesMatching(t, "sleep "+tc.marker+".5")) > 0) &&
				time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			start := time.Now()
			cmd.Process.Signal(syscall.SIGINT)
			err := cmd.Wait()
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("builder took %v to stop after SIGINT", took)
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
				t.Errorf("exit: %v, want 130\n%s", err, out.String())
			}
			if tc.name == "chroot" && !strings.Contains(out.String(), "isolation: chroot (chosen with --isolation=chroot)") {
				t.Errorf("progress does not name the isolation:\n%s", out.String())
			}
			if procs := processesMatching(t, "sleep "+tc.marker); len(procs) > 0 {
				t.Errorf("RUN processes survived the interrupt: %v", procs)
			}
			for _, dir := range []string{root, tmp} {
				if m := buildtest.Mounts(t, dir); len(m) > 0 {
					t.Errorf("mounts left: %q", m)
				}
			}
			if ents, _ := os.ReadDir(tmp); len(ents) > 1 || len(ents) == 1 && ents[0].Name() != "builder-sandbox" {
				t.Errorf("temp dir holds %v", ents)
			}
			if left, err := cgroup.Probe().RunCgroupsOf(cmd.Process.Pid); err != nil || len(left) > 0 {
				t.Errorf("cgroups left: %v %v", left, err)
			}
			good := writeCase(t, "FROM "+base+"\nRUN echo ok > /ok\n", map[string]string{})
			if out, code := cli(t, append([]string{"--root", root, "build"}, append(tc.args, good)...)...); code != 0 {
				t.Errorf("build after interrupt: exit %d\n%s", code, out)
			}
		})
	}
}

// processesMatching lists PIDs whose command line contains s.
func processesMatching(t *testing.T, s string) []string {
	t.Helper()
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		dt, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(dt), "\x00", " "), s) && !strings.Contains(string(dt), "Dockerfile") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

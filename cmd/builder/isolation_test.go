package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
	if !strings.Contains(log, "isolation: chroot (mount namespaces are not permitted") {
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

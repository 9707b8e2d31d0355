package main

import (
	"strings"
	"testing"
)

// TestRootlessMounts builds, as an unprivileged user in a user namespace,
// a RUN with cache, tmpfs and bind (read-only and rw) mounts: the sandbox resolves and
// mounts them by fd (open_tree, fsmount, move_mount) there too, and each is
// nosuid and nodev.
func TestRootlessMounts(t *testing.T) {
	f := rootlessEnv(t)
	base := rootlessBase(t)
	ctx := f.writeCase(t, "mounts", "FROM "+base+"\n"+
		"RUN --mount=type=cache,target=/tmp/c --mount=type=tmpfs,target=/tmp/t "+
		"--mount=type=bind,source=file,target=/tmp/b --mount=type=bind,target=/tmp/d,rw "+
		"--mount=type=bind,source=file,target=/tmp/f,rw "+
		"echo x > /tmp/c/x && echo y > /tmp/t/y && grep -q context /tmp/b && echo z > /tmp/d/z && "+
		"grep -q context /tmp/f && echo w > /tmp/f && "+
		"for m in /tmp/c /tmp/t /tmp/b /tmp/d /tmp/f; do grep \" $m \" /proc/self/mountinfo | grep -q nosuid,nodev || exit 9; done && "+
		"touch /done\n",
		map[string]string{"file": "from the context\n"})
	out, code := f.run(t, "build", "--progress=plain", "-t", "rootless-mounts", ctx)
	if code != 0 {
		t.Fatalf("rootless build: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "ERROR") {
		t.Errorf("build log has errors:\n%s", out)
	}
}

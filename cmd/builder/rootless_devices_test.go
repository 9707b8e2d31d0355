package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"builder/build/buildtest"
)

// TestRootlessDevices builds, as the unprivileged user, the issue's
// Dockerfile that makes a node for a host block device (a loop device on a
// file holding a secret) and reads or writes it, with and without a
// network namespace: a user namespace refuses mknod, its overlay and
// tmpfs mounts are nodev, and no device cgroup is needed for that, so the
// build fails at the RUN, the secret is not printed and the file is
// unchanged, while the standard devices work. This held before the fix
// too: the test guards it.
func TestRootlessDevices(t *testing.T) {
	f := rootlessEnv(t)
	loop := buildtest.SecretLoop(t)
	base := buildtest.BusyboxRegistry(t)
	node := fmt.Sprintf("b %d %d", loop.Major, loop.Minor)
	ctx := f.writeCase(t, "devices", "FROM "+base+"\n"+
		"ARG MODE\n"+
		"RUN test -c /dev/null && echo x > /dev/null && head -c 3 /dev/urandom | wc -c && head -c 3 /dev/zero | wc -c\n"+
		"RUN mknod /tmp/loop "+node+" && echo created && "+
		"if [ \"$MODE\" = write ]; then echo OVERWRITTEN | dd of=/tmp/loop conv=notrunc; else grep -a SECRET /tmp/loop; fi\n",
		map[string]string{})
	for _, tc := range []struct{ mode, net string }{{"read", "host"}, {"write", "host"}, {"read", "none"}, {"write", "none"}} {
		t.Run(tc.mode+" "+tc.net, func(t *testing.T) {
			out, code := f.run(t, "--root", filepath.Join(f.home, "s"), "build", "--progress=plain", "--no-cache",
				"--network", tc.net, "--build-arg", "MODE="+tc.mode, ctx)
			if code == 0 {
				t.Fatalf("the build succeeded:\n%s", out)
			}
			if !strings.Contains(out, "Dockerfile:4") {
				t.Errorf("the build did not fail at the device RUN:\n%s", out)
			}
			// The RUN prints " created" on a line of its own once mknod
			// succeeds; the step's title shows the command, not that.
			if strings.Contains(out, buildtest.Secret) || strings.Contains(out, " created\n") {
				t.Errorf("the node was made or the device read:\n%s", out)
			}
			if !strings.Contains(out, "mknod: /tmp/loop: Operation not permitted") {
				t.Errorf("mknod was not refused:\n%s", out)
			}
			loop.CheckUnchanged(t)
		})
	}
}

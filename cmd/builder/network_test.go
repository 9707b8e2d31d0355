package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/build/buildtest"
)

// httpGet is a shell function for RUN: get HOST PORT prints the body of an
// HTTP response, or nothing (busybox's static wget crashes without NSS
// libraries, so nc speaks HTTP, bounded by timeout).
const httpGet = `get() { printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc -w 3 "$1" "$2" | tail -n 1; }; `

// TestCLINetworkEntitlement checks that --network none with RUN
// --network=host fails, naming the Dockerfile line and the flag to add,
// until --allow network.host is given; and that --allow checks its values.
func TestCLINetworkEntitlement(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nRUN --network=host true\n", map[string]string{})
	out, code := cli(t, "--root", root, "build", "--network", "none", ctx)
	if code != 1 || !strings.Contains(out, "Dockerfile:2: RUN --network=host true: RUN --network=host needs the network.host entitlement: add --allow network.host") {
		t.Errorf("--network none with RUN --network=host: exit %d\n%s", code, out)
	}
	out, code = cli(t, "--root", root, "build", "--network", "none", "--allow", "security.insecure,network.host", ctx)
	if code != 0 {
		t.Errorf("with --allow network.host: exit %d\n%s", code, out)
	}
	out, code = cli(t, "--root", root, "build", "--allow", "network.hots", ctx)
	if code != 2 || !strings.Contains(out, `--allow "network.hots"`) {
		t.Errorf("--allow network.hots: exit %d\n%s", code, out)
	}
	out, code = cli(t, "--root", root, "build", "--network", "bridge", ctx)
	if code != 2 || !strings.Contains(out, "use default, none or host") {
		t.Errorf("--network bridge: exit %d\n%s", code, out)
	}
}

// TestRootlessNetwork builds as an unprivileged user with each NAT: RUN
// reaches a server outside the host (in a network namespace of the test)
// but not the host's loopback. Both NATs need /dev/net/tun, which Debian's
// udev makes 0666 (and .ci/run too, for machines without udev).
func TestRootlessNetwork(t *testing.T) {
	f := rootlessEnv(t)
	if st, err := os.Stat("/dev/net/tun"); err != nil || st.Mode().Perm()&0o006 != 0o006 {
		if os.Getenv("BUILDER_TEST_REQUIRE_ROOT") != "" {
			t.Fatalf("/dev/net/tun is not usable by other users (.ci/run makes it 0666): %v", err)
		}
		t.Skip("/dev/net/tun is not usable by other users")
	}
	base := buildtest.BusyboxRegistry(t)
	port := buildtest.LoopbackServer(t, "host-loopback")
	host, outPort, _ := net.SplitHostPort(buildtest.NetNSServer(t, "outside"))
	ctx := f.writeCase(t, "ctx", fmt.Sprintf("FROM %s\nRUN %s get 127.0.0.1 %d > /loopback; get %s %s > /outside\n",
		base, httpGet, port, host, outPort), map[string]string{})
	for _, nat := range []string{"pasta", "slirp4netns"} {
		t.Run(nat, func(t *testing.T) {
			buildtest.RequireTool(t, nat)
			dest := filepath.Join(f.home, "out-"+nat)
			cmd := f.command("build", "--progress=plain", "--no-cache", "-o", "type=local,dest="+dest, ctx)
			cmd.Env = append(cmd.Env, "BUILDER_NAT="+nat)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("rootless build: %v\n%s", err, out)
			}
			loopback, _ := os.ReadFile(filepath.Join(dest, "loopback"))
			outside, _ := os.ReadFile(filepath.Join(dest, "outside"))
			if string(loopback) != "" || string(outside) != "outside" {
				t.Errorf("host loopback gave %q (want nothing), the outside server %q (want outside)\n%s", loopback, outside, out)
			}
		})
	}
}

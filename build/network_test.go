package build

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/build/sandbox/nat"
)

// httpGet is a shell function for RUN: get HOST PORT prints the body of an
// HTTP response, or nothing. Busybox's static wget crashes without NSS
// libraries, so nc speaks HTTP; it waits for EOF on both sides, hence the
// timeout.
const httpGet = `get() { printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc -w 3 "$1" "$2" | tail -n 1; }; `

// networkCase writes a Dockerfile (after ARG BASE and FROM $BASE) into a
// new case directory and returns it.
func networkCase(t *testing.T, lines string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "context"), 0o755); err != nil {
		t.Fatal(err)
	}
	df := "ARG BASE\nFROM $BASE\n" + lines + "\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRunNetworkHostEntitlement checks that RUN --network=host needs --allow
// network.host (or --network host on the command line), whatever the
// build's network, and then gets the host's network, loopback included.
func TestRunNetworkHostEntitlement(t *testing.T) {
	f := newFixture(t)
	port := buildtest.LoopbackServer(t, "host-loopback")
	dir := networkCase(t, fmt.Sprintf("RUN --network=host %s get 127.0.0.1 %d > /got", httpGet, port))
	for _, tc := range []struct {
		network string
		allow   []string
		err     string // a regexp; "" means the build succeeds
	}{
		{NetworkNone, nil, `^Dockerfile:3: RUN --network=host .*: RUN --network=host needs the network.host entitlement: add --allow network.host`},
		{NetworkDefault, nil, `^Dockerfile:3: .*needs the network.host entitlement: add --allow network.host`},
		{NetworkNone, []string{EntitlementSecurityInsecure}, `^Dockerfile:3: .*--allow network.host`},
		{NetworkNone, []string{EntitlementNetworkHost}, ""},
		{NetworkDefault, []string{EntitlementNetworkHost}, ""},
		{NetworkHost, nil, ""},
	} {
		t.Run(fmt.Sprintf("%s-%v", tc.network, tc.allow), func(t *testing.T) {
			res, log, err := f.build(dir, func(o *Options) {
				o.Network, o.Allow, o.NoCache = tc.network, tc.allow, true
			})
			if tc.err != "" {
				if err == nil {
					t.Fatalf("build succeeded:\n%s", log)
				}
				if !regexp.MustCompile(tc.err).MatchString(err.Error()) {
					t.Errorf("error %q does not match %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("build: %v\n%s", err, log)
			}
			u := unpack(t, res.Image)
			if got := readFile(t, u.rootfs, "got"); got != "host-loopback" {
				t.Errorf("RUN --network=host got %q from the host's loopback, want host-loopback", got)
			}
		})
	}
}

// TestParseAllow checks the --allow syntax: repeatable, comma lists.
func TestParseAllow(t *testing.T) {
	got, err := ParseAllow([]string{"network.host,security.insecure", "network.host"})
	if err != nil || strings.Join(got, " ") != "network.host security.insecure network.host" {
		t.Errorf("ParseAllow = %q, %v", got, err)
	}
	if _, err := ParseAllow([]string{"network.host,device"}); err == nil || !strings.Contains(err.Error(), `"device"`) {
		t.Errorf("ParseAllow(device) error = %v", err)
	}
}

// TestDefaultNetwork checks the default network with each NAT, and without
// any (PATH without them): through a NAT, a RUN reaches a server outside the
// host (in a network namespace the test makes) but not one on the host's
// loopback; without a NAT, the build warns and RUN has the host's network.
func TestDefaultNetwork(t *testing.T) {
	f := newFixture(t)
	port := buildtest.LoopbackServer(t, "host-loopback")
	host, outPort, _ := net.SplitHostPort(buildtest.NetNSServer(t, "outside"))
	oldPath := os.Getenv("PATH")
	dir := networkCase(t, fmt.Sprintf("RUN %s get 127.0.0.1 %d > /loopback; get %s %s > /outside",
		httpGet, port, host, outPort))
	for _, tc := range []struct{ name, nat, path string }{
		{"pasta", nat.Pasta, ""},
		{"slirp4netns", nat.Slirp4netns, ""},
		{"fallback", "", t.TempDir()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.nat != "" {
				buildtest.RequireTool(t, tc.nat)
			}
			if tc.path != "" {
				// Only for the build: unpack needs umoci.
				t.Setenv("PATH", tc.path)
			}
			res, log, err := f.build(dir, func(o *Options) { o.NAT, o.NoCache = tc.nat, true })
			if tc.path != "" {
				os.Setenv("PATH", oldPath)
			}
			if err != nil {
				t.Fatalf("build: %v\n%s", err, log)
			}
			u := unpack(t, res.Image)
			loopback, outside := readFile(t, u.rootfs, "loopback"), readFile(t, u.rootfs, "outside")
			if outside != "outside" {
				t.Errorf("the outside server gave %q, want outside", outside)
			}
			const warning = "WARNING: RUN uses the host network"
			if tc.nat != "" {
				if loopback != "" {
					t.Errorf("the host's loopback was reachable: %q", loopback)
				}
				if strings.Contains(log, warning) {
					t.Errorf("log warns of the host network:\n%s", log)
				}
				return
			}
			if loopback != "host-loopback" {
				t.Errorf("the fallback's host network did not reach the host's loopback: %q", loopback)
			}
			if n := strings.Count(log, warning); n != 1 {
				t.Errorf("log has %d host-network warnings, want 1:\n%s", n, log)
			}
		})
	}
}

// TestDefaultNetworkApt checks that apt-get update works on the default
// (private) network in a Debian base: DNS through the NAT's forwarder and
// outbound HTTP. It is the one test that reaches Debian's archive.
func TestDefaultNetworkApt(t *testing.T) {
	f := newFixture(t)
	if _, err := nat.Find(""); err != nil {
		t.Fatalf("the default network needs a NAT here: %v", err)
	}
	ref := buildtest.Registry(t) + "/debian:bookworm"
	buildtest.Push(t, ref, buildtest.DebianImage(t))
	// The resolv.conf check tells the private network from the host's.
	dir := networkCase(t, "RUN grep -E '^nameserver (169.254.1.1|10.0.2.3)$' /etc/resolv.conf && "+
		"apt-get update && ls /var/lib/apt/lists | grep -q _Packages")
	_, log := f.mustBuild(dir, func(o *Options) { o.BuildArgs["BASE"] = ref })
	if strings.Contains(log, "WARNING: RUN uses the host network") {
		t.Errorf("the build fell back to the host network:\n%s", log)
	}
}

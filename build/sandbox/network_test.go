package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"builder/build/buildtest"
	"builder/build/sandbox/nat"
)

// natTools are the NATs the tests exercise, each of which CI installs.
var natTools = []string{nat.Pasta, nat.Slirp4netns}

// requireNAT returns tool, or fails or skips the test as buildtest.RequireTool.
func requireNAT(t testing.TB, tool string) nat.NAT {
	t.Helper()
	buildtest.RequireRoot(t)
	buildtest.RequireTool(t, tool)
	n, err := nat.Find(tool)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// natPids returns the pids of running NAT tools started the way nat.Start
// starts them, and of NAT guards, that this test process started (its
// descendants) or that were orphaned: other test processes build at the
// same time, and their NATs are theirs to check.
func natPids() []int {
	var pids []int
	for _, pid := range processesWithArg("/proc/self/fd/3") {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		arg0, _, _ := bytes.Cut(cmdline, []byte{0})
		if string(arg0) == nat.Pasta || string(arg0) == nat.Slirp4netns {
			pids = append(pids, pid)
		}
	}
	pids = append(pids, processesWithArg(nat.GuardArg0)...)
	return slices.DeleteFunc(pids, func(pid int) bool { return !oursOrOrphan(pid) })
}

// oursOrOrphan reports whether pid descends from this process or has been
// re-parented to pid 1.
func oursOrOrphan(pid int) bool {
	me := os.Getpid()
	for i := 0; i < 64 && pid > 1; i++ {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		_, rest, _ := bytes.Cut(stat, []byte(") "))
		f := strings.Fields(string(rest))
		if len(f) < 2 {
			return false
		}
		ppid, _ := strconv.Atoi(f[1])
		if ppid == me || ppid == 1 && i == 0 {
			return true
		}
		pid = ppid
	}
	return false
}

// newNATPids returns the NAT processes running now that were not in before.
func newNATPids(before []int) []int {
	var out []int
	for _, p := range natPids() {
		if !slices.Contains(before, p) {
			out = append(out, p)
		}
	}
	return out
}

// privateScript prints what a RUN on a private network reaches: a server
// on the host's loopback (directly and, for slirp4netns, through its
// gateway address 10.0.2.2, which it maps to the host's loopback unless
// told not to) and a server outside the host's loopback, then the
// resolv.conf it got. Pasta's gateway is the host's real one, where a test
// must not send traffic. Busybox's static wget crashes without NSS
// libraries, so nc speaks HTTP; it waits for EOF on both sides, hence the
// timeout.
func privateScript(loopbackPort int, outside string) []string {
	host, port, _ := net.SplitHostPort(outside)
	return sh(fmt.Sprintf(`get() { printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc -w 3 "$1" "$2" | tail -n 1; }
gw=$(ip route | awk '/^default/ {print $3}')
echo "gateway=$gw"
get 127.0.0.1 %[1]d && echo " via 127.0.0.1"
[ "$gw" = 10.0.2.2 ] && get "$gw" %[1]d && echo " via gateway"
get %[2]s %[3]s && echo " via NAT"
cat /etc/resolv.conf`, loopbackPort, host, port))
}

// TestPrivateNetwork checks, for each NAT, that a private network reaches
// a server outside the host (here in a network namespace of the test's own,
// reached through a veth pair) but not one on the host's loopback, that its
// resolv.conf names the NAT's DNS forwarder, and that the NAT is gone after
// the run.
func TestPrivateNetwork(t *testing.T) {
	for _, tool := range natTools {
		t.Run(tool, func(t *testing.T) {
			n := requireNAT(t, tool)
			rootfs := newRootfs(t)
			port := buildtest.LoopbackServer(t, "host-loopback")
			outside := buildtest.NetNSServer(t, "outside")
			before := natPids()
			var out, errOut bytes.Buffer
			err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Network: "private", NAT: n,
				Args: privateScript(port, outside), Stdout: &out, Stderr: &errOut, TempDir: t.TempDir()})
			if err != nil {
				t.Fatalf("Run: %v\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
			}
			got := out.String()
			if strings.Contains(got, "host-loopback") {
				t.Errorf("the host's loopback was reachable:\n%s", got)
			}
			if !strings.Contains(got, "outside via NAT") {
				t.Errorf("the outside server was not reachable through %s:\n%s\nstderr:\n%s", tool, got, &errOut)
			}
			if !strings.Contains(got, "nameserver "+nat.NAT{Tool: tool}.DNS()+"\n") {
				t.Errorf("resolv.conf does not name %s's DNS forwarder:\n%s", tool, got)
			}
			if p := newNATPids(before); len(p) != 0 {
				t.Errorf("NAT processes left after the run: %v", p)
			}
		})
	}
}

// TestPrivateNetworkNeedsNAT checks that a private network without a NAT is
// refused before anything starts.
func TestPrivateNetworkNeedsNAT(t *testing.T) {
	_, err := newConfig(Spec{Root: bindRoot("/nonexistent"), Args: []string{"true"}, Network: "private"})
	if err == nil || !strings.Contains(err.Error(), "private network without a NAT") {
		t.Fatalf("newConfig error = %v", err)
	}
}

// TestPrivateNetworkNATFails checks that a NAT that exits at once fails the
// run with its error, and leaves nothing running.
func TestPrivateNetworkNATFails(t *testing.T) {
	buildtest.RequireRoot(t)
	rootfs := newRootfs(t)
	before := initPids(t)
	err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Network: "private",
		NAT:  nat.NAT{Tool: nat.Slirp4netns, Path: "/bin/false"},
		Args: sh("echo ran"), TempDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "start slirp4netns") {
		t.Fatalf("Run error = %v, want the NAT's failure", err)
	}
	if p := initPids(t); len(p) > len(before) {
		t.Errorf("inits left: %v", p)
	}
}

// TestNATDiesWithBuilder kills (SIGKILL) a process in the middle of a
// private-network run and checks that the NAT dies too.
func TestNATDiesWithBuilder(t *testing.T) {
	for _, tool := range natTools {
		t.Run(tool, func(t *testing.T) {
			requireNAT(t, tool)
			rootfs := newRootfs(t)
			before := natPids()
			cmd := exec.Command(os.Args[0], "-test.run=^TestNATHelper$", "-test.v")
			cmd.Env = append(os.Environ(), "SANDBOX_TEST_NAT_ROOT="+rootfs, "SANDBOX_TEST_NAT_TOOL="+tool,
				"SANDBOX_TEST_NAT_TMP="+t.TempDir())
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			running := false
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if sc.Text() == "running" {
					running = true
					break
				}
			}
			if !running {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the run did not start: %s", &stderr)
			}
			pids := newNATPids(before)
			if len(pids) == 0 {
				t.Error("no NAT process found during the run")
			}
			if tool == nat.Slirp4netns {
				// slirp4netns runs without a guard (issue 19): its
				// exit fd ends it with the builder.
				for _, pid := range pids {
					if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.HasPrefix(cmdline, []byte(nat.GuardArg0+"\x00")) {
						t.Errorf("slirp4netns started through a guard (pid %d)", pid)
					}
				}
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			waitFor(t, "the NAT to exit", func() bool { return len(newNATPids(before)) == 0 })
		})
	}
}

// TestNATHelper runs a private-network sleep for TestNATDiesWithBuilder.
func TestNATHelper(t *testing.T) {
	root := os.Getenv("SANDBOX_TEST_NAT_ROOT")
	if root == "" {
		t.Skip("helper for TestNATDiesWithBuilder")
	}
	n, err := nat.Find(os.Getenv("SANDBOX_TEST_NAT_TOOL"))
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Spec{Root: bindRoot(root), Network: "private", NAT: n,
		Args: sh("echo running; sleep 60"), Stdout: os.Stdout, TempDir: os.Getenv("SANDBOX_TEST_NAT_TMP")})
	t.Fatalf("Run returned: %v", err)
}

// BenchmarkRunNetwork measures one RUN of /bin/true on each network mode:
// the cost of a private network is starting its NAT.
func BenchmarkRunNetwork(b *testing.B) {
	buildtest.RequireRoot(b)
	rootfs := newRootfs(b)
	modes := []struct {
		name, network, tool string
	}{{"host", "host", ""}, {"none", "none", ""}, {"pasta", "private", nat.Pasta}, {"slirp4netns", "private", nat.Slirp4netns}}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			spec := Spec{Root: bindRoot(rootfs), Args: []string{"/bin/true"}, Network: m.network, TempDir: b.TempDir()}
			if m.tool != "" {
				spec.NAT = requireNAT(b, m.tool)
			}
			for b.Loop() {
				if err := Run(context.Background(), spec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPrivateNetworkChroot checks a private network in chroot isolation,
// where the init has a network namespace but no PID namespace: the same
// reach as with namespaces, and the NAT gone after the run.
func TestPrivateNetworkChroot(t *testing.T) {
	buildtest.RequireRoot(t)
	n, err := nat.Find("")
	if err != nil {
		t.Fatal(err)
	}
	rootfs := newRootfs(t)
	port := buildtest.LoopbackServer(t, "host-loopback")
	outside := buildtest.NetNSServer(t, "outside")
	before := natPids()
	var out, errOut bytes.Buffer
	err = Run(context.Background(), Spec{Root: bindRoot(rootfs), Network: "private", NAT: n, Isolation: IsolationChroot,
		Args: privateScript(port, outside), Stdout: &out, Stderr: &errOut, TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Run: %v\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
	}
	if got := out.String(); strings.Contains(got, "host-loopback") || !strings.Contains(got, "outside via NAT") {
		t.Errorf("chroot private network reached:\n%s\nstderr:\n%s", got, &errOut)
	}
	if p := newNATPids(before); len(p) != 0 {
		t.Errorf("NAT processes left after the run: %v", p)
	}
}

package buildtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Serve answers every HTTP request on l with body until the test ends.
func Serve(t testing.TB, l net.Listener, body string) {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// LoopbackServer serves body over HTTP on an ephemeral port of the host's
// 127.0.0.1 and returns its port.
func LoopbackServer(t testing.TB, body string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, l, body)
	return l.Addr().(*net.TCPAddr).Port
}

// NetNSServer creates a network namespace joined to the host by a veth pair
// with addresses in a private /30 it picks from 10.213.0.0/16, serves body
// over HTTP inside it, and returns the server's "IP:PORT". The server is
// reachable from the host, so through a RUN's NAT, like any outside
// server, but nothing else leaves the namespace. The namespace is held by
// an fd of the test process only (no /run/netns entry, no mount); it and
// the pair are gone when the test ends, on every path. It needs root,
// iproute2 and nsenter.
func NetNSServer(t testing.TB, body string) string {
	t.Helper()
	RequireRoot(t)
	ipCmd := RequireTool(t, "ip")
	nsenter := RequireTool(t, "nsenter")
	ns, err := newNetNS()
	if err != nil {
		t.Fatal(err)
	}
	nsPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	n := rand.IntN(1 << 14) // /30 number within 10.213.0.0/16
	host, peer := fmt.Sprintf("bth%d", n), fmt.Sprintf("btp%d", n)
	hostIP := fmt.Sprintf("10.213.%d.%d", n/64, n%64*4+1)
	peerIP := fmt.Sprintf("10.213.%d.%d", n/64, n%64*4+2)
	t.Cleanup(func() {
		// The namespace dies with its last reference (this fd and the
		// listener's socket), taking the peer and with it the pair.
		_ = exec.Command(ipCmd, "link", "del", host).Run()
		ns.Close()
	})
	run(ipCmd, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", nsPath)
	run(ipCmd, "addr", "add", hostIP+"/30", "dev", host)
	run(ipCmd, "link", "set", host, "up")
	in := []string{nsenter, "--net=" + nsPath, ipCmd}
	run(append(in, "addr", "add", peerIP+"/30", "dev", peer)...)
	run(append(in, "link", "set", peer, "up")...)
	run(append(in, "link", "set", "lo", "up")...)
	l, err := listenIn(ns, peerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, l, body)
	return l.Addr().String()
}

// newNetNS creates a network namespace and returns an fd holding it. The
// thread that creates it returns to its own namespace before it is
// unlocked, or is thrown away.
func newNetNS() (*os.File, error) {
	var ns *os.File
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("create network namespace: %w", err)
		}
		var err error
		ns, err = os.Open("/proc/thread-self/ns/net")
		return err
	})
	return ns, err
}

// listenIn opens a TCP listener on addr inside the network namespace ns.
// The socket stays in that namespace.
func listenIn(ns *os.File, addr string) (net.Listener, error) {
	var l net.Listener
	err := onThread(func() error {
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// onThread runs fn on a locked thread of its own, then returns the thread
// to the process's network namespace; if that fails, the thread is thrown
// away with its goroutine.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		err = fn()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Package nat runs the userspace NAT of a RUN's private network
// (sandbox.Spec.Network "private"): a new network namespace whose only way
// out is a userspace NAT, pasta or slirp4netns, as podman and buildah use
// them. The NAT runs in the builder's own network namespace and opens
// ordinary sockets there on the command's behalf, so the command reaches
// what any unprivileged program of the host could, except the host's
// loopback: pasta runs with --no-map-gw and without port forwards,
// slirp4netns with --disable-host-loopback.
//
// Pasta is not the builder's direct child: it drops its capabilities,
// which clears its parent-death signal, so it would outlive a builder
// killed with SIGKILL. A small guard (the builder binary again:
// sandbox.Reexec calls GuardMain when IsGuard) starts it, reports when it
// is ready, and kills it by PID and reaps it as soon as its stdin reaches
// EOF, which happens however the builder ends. slirp4netns needs no guard
// (see startSlirp): it watches a pipe that closes when the builder ends.
package nat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The NAT tools of NAT.Tool.
const (
	Pasta       = "pasta"
	Slirp4netns = "slirp4netns"
)

// ErrUnavailable is wrapped by Find's errors when no NAT tool is installed or
// none can work here.
var ErrUnavailable = errors.New("no usable userspace NAT")

// natDNS is the address the command's resolv.conf names for each tool: the
// tool forwards DNS queries sent there to the host's resolver, which may
// itself be on the host's loopback (such as 127.0.0.53).
var natDNS = map[string]string{
	Pasta:       "169.254.1.1",
	Slirp4netns: "10.0.2.3",
}

// NAT is the userspace NAT of a private network.
type NAT struct {
	// Tool is Pasta or Slirp4netns.
	Tool string
	// Path is the tool's executable.
	Path string
}

// Find looks the NAT tool up in PATH: want names one (Pasta or
// Slirp4netns), or "" takes slirp4netns where installed, else pasta:
// both keep the host's loopback out, and on Debian 12 slirp4netns starts in
// about a third of pasta's time (BenchmarkRunNetwork: +0.13 s against
// +0.8 s per RUN over host networking on this 2-core VM). It
// returns an error wrapping ErrUnavailable when none is found, or when this
// process cannot open /dev/net/tun, which both need (it is 0600 on some
// machines, which keeps a rootless builder out).
func Find(want string) (NAT, error) {
	tools := []string{Slirp4netns, Pasta}
	switch want {
	case "":
	case Pasta, Slirp4netns:
		tools = []string{want}
	default:
		return NAT{}, fmt.Errorf("unknown NAT %q: use %s or %s", want, Pasta, Slirp4netns)
	}
	for _, t := range tools {
		p, err := exec.LookPath(t)
		if err != nil {
			continue
		}
		tun, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
		if err != nil {
			return NAT{}, fmt.Errorf("%w: %s needs /dev/net/tun: %w", ErrUnavailable, t, err)
		}
		tun.Close()
		return NAT{Tool: t, Path: p}, nil
	}
	if want != "" {
		return NAT{}, fmt.Errorf("%w: %s is not installed", ErrUnavailable, want)
	}
	return NAT{}, fmt.Errorf("%w: neither pasta (Debian package passt) nor slirp4netns is installed", ErrUnavailable)
}

// ResolvConf returns the resolv.conf of a private network behind n: its DNS
// forwarder (DNS), with the search and options lines of host, the host's
// resolv.conf.
func (n NAT) ResolvConf(host []byte) []byte {
	out := fmt.Appendf(nil, "nameserver %s\n", n.DNS())
	for _, line := range strings.Split(string(host), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "search" || f[0] == "domain" || f[0] == "options") {
			out = append(out, strings.Join(f, " ")+"\n"...)
		}
	}
	return out
}

// DNS returns the address the command's resolv.conf names for n's DNS
// forwarder, or "" for an unknown tool.
func (n NAT) DNS() string { return natDNS[n.Tool] }

// Valid reports whether n names a known tool and its executable.
func (n NAT) Valid() bool { return natArgs(n.Tool) != nil && n.Path != "" }

// natArgs is the command line of tool attached to the network namespace
// open on the guard's fd 3; it reports readiness on fd 4.
func natArgs(tool string) []string {
	switch tool {
	case Pasta:
		// --runas 0: as root, pasta would switch to nobody, which may
		// not enter the namespace; it drops its capabilities anyway.
		return []string{Pasta, "--runas", "0", "--config-net", "--quiet", "--foreground",
			"--no-map-gw", "-t", "none", "-u", "none", "-T", "none", "-U", "none",
			"--dns-forward", natDNS[Pasta], "--netns", "/proc/self/fd/3", "--pid", "/proc/self/fd/4"}
	case Slirp4netns:
		return []string{Slirp4netns, "--configure", "--mtu=65520", "--disable-host-loopback",
			"--netns-type=path", "--ready-fd=4", "/proc/self/fd/3", "tap0"}
	}
	return nil
}

// GuardArg0 is the argv[0] of the guard process, and natEnv set to "1"
// marks it too (as the sandbox marks its init).
const (
	GuardArg0 = "builder-sandbox-nat"
	natEnv    = "_BUILDER_SANDBOX_NAT"
)

// IsGuard reports whether this process is a NAT guard that Start started:
// then the caller (sandbox.Reexec) must exit with GuardMain's code.
func IsGuard() bool {
	return len(os.Args) != 0 && os.Args[0] == GuardArg0 && os.Getenv(natEnv) == "1"
}

// natReadyTimeout bounds how long a NAT may take to configure the namespace.
const natReadyTimeout = 30 * time.Second

// Process is a running guard and its NAT.
type Process struct {
	cmd  *exec.Cmd
	stop *os.File // the guard's stdin; closing it stops the NAT
}

// Start starts n (pasta through its guard, slirp4netns directly) for the
// network namespace of process pid and returns once the namespace is
// configured. The caller must call close on the result, on every path.
// Every binary that calls it must start with sandbox.Reexec, which runs the
// guard.
func Start(ctx context.Context, n NAT, pid int) (*Process, error) {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("start %s: open network namespace: %w", n.Tool, err)
	}
	defer ns.Close()
	if n.Tool == Slirp4netns {
		return startSlirp(ctx, n, ns)
	}
	stopR, stopW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", n.Tool, err)
	}
	defer stopR.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		stopW.Close()
		return nil, fmt.Errorf("start %s: %w", n.Tool, err)
	}
	defer readyR.Close()
	var stderr bytes.Buffer
	cmd := exec.Command("/proc/self/exe", n.Tool, n.Path)
	cmd.Args[0] = GuardArg0
	cmd.Env = []string{natEnv + "=1", "GOMAXPROCS=1"}
	cmd.Dir = "/"
	cmd.Stdin = stopR
	cmd.Stdout = readyW
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{ns}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		stopW.Close()
		return nil, fmt.Errorf("start %s: %w", n.Tool, err)
	}
	p := &Process{cmd: cmd, stop: stopW}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(readyR).ReadString('\n')
		line <- s
	}()
	var ready string
	select {
	case ready = <-line:
	case <-ctx.Done():
		p.Close()
		return nil, fmt.Errorf("start %s: %w", n.Tool, ctx.Err())
	}
	if strings.TrimSpace(ready) != "ready" {
		p.Close()
		msg := strings.TrimSpace(ready + stderr.String())
		if msg == "" {
			msg = "exited before the network was configured"
		}
		return nil, fmt.Errorf("start %s: %s", n.Tool, msg)
	}
	return p, nil
}

// Close stops the NAT and waits for its guard, which reaps it first. It is
// safe to call more than once, and on nil.
func (p *Process) Close() {
	if p == nil || p.stop == nil {
		return
	}
	p.stop.Close()
	p.stop = nil
	_ = p.cmd.Wait()
}

// GuardMain is the life of the guard: it starts the NAT tool named by its
// arguments on the network namespace of fd 3, prints "ready" when the tool
// says the namespace is configured (or why it failed), and kills the tool
// when stdin reaches EOF or SIGTERM arrives (the builder died). It returns
// the guard's exit code.
func GuardMain() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM, unix.SIGINT)
	if len(os.Args) != 3 || natArgs(os.Args[1]) == nil {
		fmt.Println("bad NAT guard arguments")
		return 2
	}
	tool, path := os.Args[1], os.Args[2]
	readyR, readyW, err := os.Pipe()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ns := os.NewFile(3, "netns")
	args := natArgs(tool)
	cmd := exec.Command(path, args[1:]...)
	cmd.Args[0] = args[0]
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{ns, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Println(err)
		return 1
	}
	readyW.Close()
	ns.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// pasta writes its PID, slirp4netns "1", once the namespace is set up.
	ready := make(chan bool, 1)
	go func() {
		var b [32]byte
		n, _ := readyR.Read(b[:])
		ready <- n > 0
	}()
	stdin := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdin)
	}()
	kill := func() int {
		_ = cmd.Process.Kill()
		<-exited
		return 0
	}
	select {
	case ok := <-ready:
		if !ok {
			err := <-exited
			fmt.Printf("%s exited before the network was configured: %v\n", tool, err)
			return 1
		}
		fmt.Println("ready")
	case err := <-exited:
		fmt.Printf("%s exited before the network was configured: %v\n", tool, err)
		return 1
	case <-time.After(natReadyTimeout):
		fmt.Printf("%s did not configure the network within %s\n", tool, natReadyTimeout)
		return kill() + 1
	case <-stdin:
		return kill()
	case <-term:
		return kill()
	}
	select {
	case <-stdin:
	case <-term:
	case err := <-exited:
		fmt.Fprintf(os.Stderr, "%s exited during the run: %v\n", tool, err)
		return 1
	}
	return kill()
}

package sandbox

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
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A private network (Spec.Network "private") is a new network namespace
// whose only way out is a userspace NAT, pasta or slirp4netns, as podman
// and buildah use them. The NAT runs in the builder's own network namespace
// and opens ordinary sockets there on the command's behalf, so the command
// reaches what any unprivileged program of the host could, except the
// host's loopback: pasta runs with --no-map-gw and without port forwards,
// slirp4netns with --disable-host-loopback.
//
// The NAT is not the builder's direct child: pasta drops its capabilities,
// which clears its parent-death signal, so it would outlive a builder
// killed with SIGKILL. A small guard (the builder binary again, see
// Reexec) starts it, reports when it is ready, and kills it by PID and
// reaps it as soon as its stdin reaches EOF, which happens however the
// builder ends.

// The NAT tools of NAT.Tool.
const (
	NATPasta       = "pasta"
	NATSlirp4netns = "slirp4netns"
)

// ErrNoNAT is wrapped by FindNAT's errors when no NAT tool is installed or
// none can work here.
var ErrNoNAT = errors.New("no usable userspace NAT")

// natDNS is the address the command's resolv.conf names for each tool: the
// tool forwards DNS queries sent there to the host's resolver, which may
// itself be on the host's loopback (such as 127.0.0.53).
var natDNS = map[string]string{
	NATPasta:       "169.254.1.1",
	NATSlirp4netns: "10.0.2.3",
}

// NAT is the userspace NAT of a private network.
type NAT struct {
	// Tool is NATPasta or NATSlirp4netns.
	Tool string
	// Path is the tool's executable.
	Path string
}

// FindNAT looks the NAT tool up in PATH: want names one (NATPasta or
// NATSlirp4netns), or "" takes slirp4netns where installed, else pasta:
// both keep the host's loopback out, and on Debian 12 slirp4netns starts in
// about a third of pasta's time (BenchmarkRunNetwork: +0.13 s against
// +0.8 s per RUN over host networking on this 2-core VM). It
// returns an error wrapping ErrNoNAT when none is found, or when this
// process cannot open /dev/net/tun, which both need (it is 0600 on some
// machines, which keeps a rootless builder out).
func FindNAT(want string) (NAT, error) {
	tools := []string{NATSlirp4netns, NATPasta}
	switch want {
	case "":
	case NATPasta, NATSlirp4netns:
		tools = []string{want}
	default:
		return NAT{}, fmt.Errorf("unknown NAT %q: use %s or %s", want, NATPasta, NATSlirp4netns)
	}
	for _, t := range tools {
		p, err := exec.LookPath(t)
		if err != nil {
			continue
		}
		tun, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
		if err != nil {
			return NAT{}, fmt.Errorf("%w: %s needs /dev/net/tun: %w", ErrNoNAT, t, err)
		}
		tun.Close()
		return NAT{Tool: t, Path: p}, nil
	}
	if want != "" {
		return NAT{}, fmt.Errorf("%w: %s is not installed", ErrNoNAT, want)
	}
	return NAT{}, fmt.Errorf("%w: neither pasta (Debian package passt) nor slirp4netns is installed", ErrNoNAT)
}

// ProbeNetNS reports whether this process may create a network namespace.
// It tries on a thread of its own, which is thrown away afterwards, so the
// process's network namespace is never changed.
func ProbeNetNS() error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		errc <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("network namespaces are not permitted: %w", err)
	}
	return nil
}

// natResolvConf returns the resolv.conf of a private network: the NAT's DNS
// forwarder, with the host's search and options lines.
func natResolvConf(tool string, host []byte) []byte {
	out := fmt.Appendf(nil, "nameserver %s\n", natDNS[tool])
	for _, line := range strings.Split(string(host), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "search" || f[0] == "domain" || f[0] == "options") {
			out = append(out, strings.Join(f, " ")+"\n"...)
		}
	}
	return out
}

// natArgs is the command line of tool attached to the network namespace
// open on the guard's fd 3; it reports readiness on fd 4.
func natArgs(tool string) []string {
	switch tool {
	case NATPasta:
		// --runas 0: as root, pasta would switch to nobody, which may
		// not enter the namespace; it drops its capabilities anyway.
		return []string{NATPasta, "--runas", "0", "--config-net", "--quiet", "--foreground",
			"--no-map-gw", "-t", "none", "-u", "none", "-T", "none", "-U", "none",
			"--dns-forward", natDNS[NATPasta], "--netns", "/proc/self/fd/3", "--pid", "/proc/self/fd/4"}
	case NATSlirp4netns:
		return []string{NATSlirp4netns, "--configure", "--mtu=65520", "--disable-host-loopback",
			"--netns-type=path", "--ready-fd=4", "/proc/self/fd/3", "tap0"}
	}
	return nil
}

// The guard is marked like the init (see initArg0).
const (
	natArg0 = "builder-sandbox-nat"
	natEnv  = "_BUILDER_SANDBOX_NAT"
)

// natReadyTimeout bounds how long a NAT may take to configure the namespace.
const natReadyTimeout = 30 * time.Second

// natProcess is a running guard and its NAT.
type natProcess struct {
	cmd  *exec.Cmd
	stop *os.File // the guard's stdin; closing it stops the NAT
}

// startNAT starts nat's guard for the network namespace of process pid and
// returns once the namespace is configured. The caller must call close on
// the result, on every path.
func startNAT(ctx context.Context, nat NAT, pid int) (*natProcess, error) {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("start %s: open network namespace: %w", nat.Tool, err)
	}
	defer ns.Close()
	stopR, stopW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", nat.Tool, err)
	}
	defer stopR.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		stopW.Close()
		return nil, fmt.Errorf("start %s: %w", nat.Tool, err)
	}
	defer readyR.Close()
	var stderr bytes.Buffer
	cmd := exec.Command("/proc/self/exe", nat.Tool, nat.Path)
	cmd.Args[0] = natArg0
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
		return nil, fmt.Errorf("start %s: %w", nat.Tool, err)
	}
	p := &natProcess{cmd: cmd, stop: stopW}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(readyR).ReadString('\n')
		line <- s
	}()
	var ready string
	select {
	case ready = <-line:
	case <-ctx.Done():
		p.close()
		return nil, fmt.Errorf("start %s: %w", nat.Tool, ctx.Err())
	}
	if strings.TrimSpace(ready) != "ready" {
		p.close()
		msg := strings.TrimSpace(ready + stderr.String())
		if msg == "" {
			msg = "exited before the network was configured"
		}
		return nil, fmt.Errorf("start %s: %s", nat.Tool, msg)
	}
	return p, nil
}

// close stops the NAT and waits for its guard, which reaps it first. It is
// safe to call more than once, and on nil.
func (p *natProcess) close() {
	if p == nil || p.stop == nil {
		return
	}
	p.stop.Close()
	p.stop = nil
	_ = p.cmd.Wait()
}

// natMain is the life of the guard: it starts the NAT tool named by its
// arguments on the network namespace of fd 3, prints "ready" when the tool
// says the namespace is configured (or why it failed), and kills the tool
// when stdin reaches EOF or SIGTERM arrives (the builder died). It returns
// the guard's exit code.
func natMain() int {
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

// awaitNetwork blocks the init, when wait is set, until Run's go-ahead
// arrives on goFD: the NAT has configured the network namespace.
func awaitNetwork(wait bool) error {
	if !wait {
		return nil
	}
	f := os.NewFile(goFD, "go-ahead")
	defer f.Close()
	var b [1]byte
	if n, _ := f.Read(b[:]); n != 1 {
		return errors.New("the network's NAT did not start")
	}
	return nil
}

// goAhead starts nat for the network namespace of the init pid and sends
// the init its go-ahead on goW, or closes goW without one when the NAT
// cannot start, so that the init gives up. The caller closes the result.
func goAhead(ctx context.Context, nat NAT, pid int, goR, goW *os.File) (*natProcess, error) {
	goR.Close()
	defer goW.Close()
	p, err := startNAT(ctx, nat, pid)
	if err != nil {
		return nil, err
	}
	// A failed write means the init is gone; its result says why.
	_, _ = goW.Write([]byte{1})
	return p, nil
}

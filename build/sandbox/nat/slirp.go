package nat

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// slirpExitFD is the fd on which slirp4netns watches the read end of a
// pipe whose write end only the builder holds (--exit-fd): slirp4netns
// exits on the first poll event there, which is the pipe's hang-up when
// the builder closes it (Process.Close) or dies, even by SIGKILL.
const slirpExitFD = 5

// startSlirp starts slirp4netns itself, without a guard, on the network
// namespace ns, and returns once it has configured it. slirp4netns keeps
// its capabilities and its parent-death signal, and --exit-fd ends it with
// the builder, so the guard, a second start of the builder binary per RUN
// (issue 19), is not needed for it; pasta drops its capabilities, which
// clears the parent-death signal, and has no exit fd, so pasta keeps its
// guard.
func startSlirp(ctx context.Context, n NAT, ns *os.File) (*Process, error) {
	exitR, exitW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", n.Tool, err)
	}
	defer exitR.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		exitW.Close()
		return nil, fmt.Errorf("start %s: %w", n.Tool, err)
	}
	defer readyR.Close()
	args := natArgs(Slirp4netns)
	// The options go before the two positional arguments.
	args = append(args[:len(args)-2:len(args)-2], fmt.Sprintf("--exit-fd=%d", slirpExitFD), args[len(args)-2], args[len(args)-1])
	var stderr bytes.Buffer
	cmd := exec.Command(n.Path, args[1:]...)
	cmd.Args[0] = args[0]
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{ns, readyW, exitR} // fds 3, 4 and slirpExitFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		exitW.Close()
		return nil, fmt.Errorf("start %s: %w", n.Tool, err)
	}
	p := &Process{cmd: cmd, stop: exitW}
	// slirp4netns writes "1" and closes the fd once the namespace is
	// configured; EOF without it means it exited first.
	ready := make(chan bool, 1)
	go func() {
		var b [8]byte
		k, _ := readyR.Read(b[:])
		ready <- k > 0
	}()
	timeout := time.NewTimer(natReadyTimeout)
	defer timeout.Stop()
	select {
	case ok := <-ready:
		if ok {
			return p, nil
		}
		p.Close()
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = fmt.Sprintf("exited before the network was configured: %v", cmd.ProcessState)
		}
		return nil, fmt.Errorf("start %s: %s", n.Tool, msg)
	case <-timeout.C:
		p.kill()
		return nil, fmt.Errorf("start %s: did not configure the network within %s", n.Tool, natReadyTimeout)
	case <-ctx.Done():
		p.kill()
		return nil, fmt.Errorf("start %s: %w", n.Tool, ctx.Err())
	}
}

// kill ends the NAT at once and reaps it.
func (p *Process) kill() {
	_ = p.cmd.Process.Kill()
	p.Close()
}

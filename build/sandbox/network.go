package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"builder/build/sandbox/nat"
)

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

// goAhead starts the NAT n for the network namespace of the init pid and sends
// the init its go-ahead on goW, or closes goW without one when the NAT
// cannot start, so that the init gives up. The caller closes the result.
func goAhead(ctx context.Context, n nat.NAT, pid int, goR, goW *os.File) (*nat.Process, error) {
	goR.Close()
	defer goW.Close()
	p, err := nat.Start(ctx, n, pid)
	if err != nil {
		return nil, err
	}
	// A failed write means the init is gone; its result says why.
	_, _ = goW.Write([]byte{1})
	return p, nil
}

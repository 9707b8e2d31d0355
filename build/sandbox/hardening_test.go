package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"builder/build/sandbox/seccomp"
)

// TestHardening runs commands in the sandbox and checks what they may do:
// no new privileges, a seccomp filter, no mount or namespace, only fds 0-2,
// no host file and no host environment; --security=insecure lifts the
// filter and the capability limit.
func TestHardening(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	hostDir := t.TempDir()
	canary := filepath.Join(hostDir, "canary")
	if err := os.WriteFile(canary, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BUILDER_HOST_CANARY", "leak")
	// A host fd without close-on-exec must not reach the command.
	f, err := os.Open(hostDir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		script   string
		insecure bool
		want     string
	}{
		{name: "no_new_privs and seccomp", script: "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status",
			want: "NoNewPrivs:\t1\nSeccomp:\t2\n"},
		{name: "insecure", insecure: true, script: "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status",
			want: "NoNewPrivs:\t0\nSeccomp:\t0\n"},
		{name: "no sys_admin", script: "grep CapEff /proc/self/status", want: "CapEff:\t00000000a80425fb\n"},
		{name: "mount fails", script: "mkdir -p /mnt; mount -t tmpfs x /mnt && echo mounted || echo denied", want: "denied\n"},
		{name: "umount fails", script: "umount /proc && echo unmounted || echo denied", want: "denied\n"},
		{name: "unshare fails", script: "unshare -m true && echo ok || echo denied", want: "denied\n"},
		{name: "user namespace fails", script: "unshare -U true && echo ok || echo denied", want: "denied\n"},
		{name: "insecure unshare works", insecure: true, script: "unshare -m true && echo ok || echo denied", want: "ok\n"},
		{name: "only stdio fds", script: "ls /proc/self/fd | sort -n | tr '\\n' ' '", want: "0 1 2 3 "},
		{name: "init fds closed to the command", script: "for f in /proc/1/fd/*; do readlink $f; cd $f 2>/dev/null && pwd; done 2>/dev/null; echo end",
			want: "end\n"},
		{name: "host file invisible", script: "ls " + canary + " 2>/dev/null || echo absent", want: "absent\n"},
		{name: "host env invisible", script: "env | grep -c BUILDER_HOST_CANARY || true", want: "0\n"},
		{name: "fd paths stay inside", script: "for n in 3 4 5 6 7 8 9 10; do cd /proc/self/fd/$n 2>/dev/null && pwd -P; done; echo end",
			want: "end\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Args: sh(tt.script),
				Insecure: tt.insecure, Stdout: &out, Stderr: &errb})
			if err != nil {
				t.Fatalf("run: %v\n%s", err, errb.String())
			}
			if out.String() != tt.want {
				t.Errorf("output = %q, want %q (stderr %q)", out.String(), tt.want, errb.String())
			}
		})
	}
	if b, err := os.ReadFile(canary); err != nil || string(b) != "host secret\n" {
		t.Errorf("canary = %q, %v", b, err)
	}
}

// TestWorkdirProcFd runs with a working directory of /proc/self/fd/N, the
// path of CVE-2024-21626: either the run fails or its directory is inside
// the root.
func TestWorkdirProcFd(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	// A host directory open without close-on-exec in the builder is the
	// fd a /proc/self/fd/N working directory would reach.
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "marker"), []byte("host marker\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(hostDir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	t.Logf("host directory fd %d", fd)
	for n := 3; n <= 10; n++ {
		cwd := "/proc/self/fd/" + strconv.Itoa(n)
		var out, errb bytes.Buffer
		err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Args: sh("pwd -P; cat marker"), Cwd: cwd, Stdout: &out, Stderr: &errb})
		t.Logf("cwd %s: err %v, out %q, stderr %q", cwd, err, out.String(), errb.String())
		if err == nil {
			t.Errorf("cwd %s: run succeeded with output %q", cwd, out.String())
		}
		if strings.Contains(out.String(), "host marker") {
			t.Errorf("cwd %s: the command reached the host: %q", cwd, out.String())
		}
	}
}

// TestSeccompChrootKernel loads the chroot-mode filter on a throwaway
// thread, serves its listener for the process group of the test, and
// sends signal 0 (which only checks permission): to every process and to
// another process group it fails with EPERM, to its own group (by 0 or by
// number) and to itself it works.
func TestSeccompChrootKernel(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("no seccomp table for " + runtime.GOARCH)
	}
	pgid := unix.Getpgrp()
	errs := make(chan []error, 1)
	listened := make(chan bool, 1)
	go func() {
		runtime.LockOSThread() // the thread keeps the filter and dies with the goroutine
		listener, err := seccomp.Install(true)
		if err != nil {
			errs <- []error{err}
			return
		}
		listened <- listener != nil
		stop := serveSignals(listener, pgid, new(atomic.Bool))
		defer stop()
		// Syscall, not RawSyscall: a notified kill blocks until the server
		// goroutine answers, and a raw call would keep its P meanwhile, so
		// a garbage collection stopping the world would wait for it forever
		// while the server cannot run (seen as a 10-minute hang).
		call := func(nr, a0, a1 uintptr) error {
			if _, _, e := unix.Syscall(nr, a0, a1, 0); e != 0 {
				return e
			}
			return nil
		}
		errs <- []error{
			call(unix.SYS_KILL, ^uintptr(0), 0),             // -1
			call(unix.SYS_KILL, uintptr(-(pgid + 7919)), 0), // another group
			call(unix.SYS_KILL, uintptr(-pgid), 0),          // its own group by number
			call(unix.SYS_KILL, 0, 0),                       // its own group
			call(unix.SYS_KILL, uintptr(unix.Getpid()), 0),  // itself
			call(unix.SYS_KILL, 0xffffffff, 0),              // -1 in the low 32 bits
			call(unix.SYS_TKILL, ^uintptr(0), 0),            // a group: EPERM before EINVAL
			call(unix.SYS_TKILL, uintptr(unix.Gettid()), 0),
		}
	}()
	got := <-errs
	if len(got) == 1 {
		t.Fatal(got[0])
	}
	if !<-listened {
		t.Fatal("no seccomp listener on this kernel")
	}
	want := []error{unix.EPERM, unix.EPERM, nil, nil, nil, unix.EPERM, unix.EPERM, nil}
	for i := range want {
		if got[i] != want[i] && !errors.Is(got[i], want[i]) {
			t.Errorf("call %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

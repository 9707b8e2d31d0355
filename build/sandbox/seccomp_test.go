package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// runBPF interprets the subset of classic BPF that seccompProgram emits on
// one struct seccomp_data, so that the filter can be checked for every
// architecture and argument without the kernel.
func runBPF(t *testing.T, prog []unix.SockFilter, data []byte) uint32 {
	t.Helper()
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a = binary.LittleEndian.Uint32(data[ins.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			a &= ins.K
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(ins.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if a == ins.K {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			if a&ins.K != 0 {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return ins.K
		default:
			t.Fatalf("unexpected instruction %#x at %d", ins.Code, pc)
		}
	}
	t.Fatal("program fell off its end")
	return 0
}

func seccompData(arch, nr uint32, arg0 uint64) []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], nr)
	binary.LittleEndian.PutUint32(b[4:], arch)
	binary.LittleEndian.PutUint64(b[16:], arg0)
	return b
}

func TestSeccompProgram(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("seccomp tables exist for amd64 only")
	}
	const (
		x86   = unix.AUDIT_ARCH_X86_64
		i386  = unix.AUDIT_ARCH_I386
		x32   = 0x40000000
		fork  = uint64(unix.SIGCHLD)
		newNS = uint64(unix.CLONE_NEWNS | unix.SIGCHLD)
	)
	prog := seccompProgram(seccompArchs)
	if len(prog) > unix.BPF_MAXINSNS {
		t.Fatalf("program has %d instructions", len(prog))
	}
	tests := []struct {
		name string
		arch uint32
		nr   uint32
		arg0 uint64
		want uint32
	}{
		{"getpid", x86, unix.SYS_GETPID, 0, retAllow},
		{"read", x86, unix.SYS_READ, 0, retAllow},
		{"ptrace", x86, unix.SYS_PTRACE, 0, retAllow},
		{"chroot", x86, unix.SYS_CHROOT, 0, retAllow},
		{"keyctl", x86, unix.SYS_KEYCTL, 0, retEPERM},
		{"add_key", x86, unix.SYS_ADD_KEY, 0, retEPERM},
		{"request_key", x86, unix.SYS_REQUEST_KEY, 0, retEPERM},
		{"mount", x86, unix.SYS_MOUNT, 0, retEPERM},
		{"umount2", x86, unix.SYS_UMOUNT2, 0, retEPERM},
		{"pivot_root", x86, unix.SYS_PIVOT_ROOT, 0, retEPERM},
		{"fsopen", x86, unix.SYS_FSOPEN, 0, retEPERM},
		{"unshare", x86, unix.SYS_UNSHARE, 0, retEPERM},
		{"setns", x86, unix.SYS_SETNS, 0, retEPERM},
		{"bpf", x86, unix.SYS_BPF, 0, retEPERM},
		{"perf_event_open", x86, unix.SYS_PERF_EVENT_OPEN, 0, retEPERM},
		{"userfaultfd", x86, unix.SYS_USERFAULTFD, 0, retEPERM},
		{"open_by_handle_at", x86, unix.SYS_OPEN_BY_HANDLE_AT, 0, retEPERM},
		{"kexec_load", x86, unix.SYS_KEXEC_LOAD, 0, retEPERM},
		{"init_module", x86, unix.SYS_INIT_MODULE, 0, retEPERM},
		{"reboot", x86, unix.SYS_REBOOT, 0, retEPERM},
		{"swapon", x86, unix.SYS_SWAPON, 0, retEPERM},
		{"clone3", x86, unix.SYS_CLONE3, 0, retENOSYS},
		{"clone fork", x86, unix.SYS_CLONE, fork, retAllow},
		{"clone thread", x86, unix.SYS_CLONE, unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND, retAllow},
		{"clone newns", x86, unix.SYS_CLONE, newNS, retEPERM},
		{"clone newuser", x86, unix.SYS_CLONE, unix.CLONE_NEWUSER, retEPERM},
		{"clone newnet", x86, unix.SYS_CLONE, unix.CLONE_NEWNET, retEPERM},
		{"x32 getpid", x86, x32 | unix.SYS_GETPID, 0, retAllow},
		{"x32 mount", x86, x32 | unix.SYS_MOUNT, 0, retEPERM},
		{"x32 clone newpid", x86, x32 | unix.SYS_CLONE, unix.CLONE_NEWPID, retEPERM},
		{"i386 getpid", i386, 20, 0, retAllow},
		{"i386 mount", i386, 21, 0, retEPERM},
		{"i386 keyctl", i386, 288, 0, retEPERM},
		{"i386 unshare", i386, 310, 0, retEPERM},
		{"i386 clone fork", i386, 120, fork, retAllow},
		{"i386 clone newns", i386, 120, newNS, retEPERM},
		{"i386 clone3", i386, 435, 0, retENOSYS},
		{"unknown arch", unix.AUDIT_ARCH_AARCH64, unix.SYS_GETPID, 0, retKill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := runBPF(t, prog, seccompData(tt.arch, tt.nr, tt.arg0)); got != tt.want {
				t.Errorf("action = %#x, want %#x", got, tt.want)
			}
		})
	}
}

// TestSeccompKernel loads the filter on a throwaway thread of the test
// process and makes denied and allowed calls there.
func TestSeccompKernel(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("seccomp tables exist for amd64 only")
	}
	errs := make(chan []error, 1)
	go func() {
		// The thread keeps the filter, so it must die with the goroutine.
		runtime.LockOSThread()
		if err := installSeccomp(); err != nil {
			errs <- []error{err}
			return
		}
		var got []error
		call := func(nr, a0, a1 uintptr) error {
			_, _, e := unix.RawSyscall(nr, a0, a1, 0)
			if e == 0 {
				return nil
			}
			return e
		}
		got = append(got,
			call(unix.SYS_KEYCTL, 0, 0),
			call(unix.SYS_UNSHARE, unix.CLONE_NEWNS, 0),
			call(unix.SYS_UNSHARE, unix.CLONE_NEWUSER, 0),
			call(unix.SYS_MOUNT, 0, 0),
			call(unix.SYS_CLONE3, 0, 0),
			call(unix.SYS_GETPID, 0, 0),
		)
		errs <- got
	}()
	got := <-errs
	if len(got) == 1 {
		t.Fatal(got[0])
	}
	want := []error{unix.EPERM, unix.EPERM, unix.EPERM, unix.EPERM, unix.ENOSYS, nil}
	for i := range want {
		if !errors.Is(got[i], want[i]) && got[i] != want[i] {
			t.Errorf("call %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

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

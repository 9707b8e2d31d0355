package seccomp

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"builder/internal/testenv"
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
		case unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K:
			if a > ins.K {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			if a >= ins.K {
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

// TestSeccompProgram runs the filters built from the generated tables
// through the interpreter: calls Docker allows, calls it refuses (among them
// those the hand-written denylist this filter replaced used to allow), and
// argument conditions.
func TestSeccompProgram(t *testing.T) {
	const (
		x86     = unix.AUDIT_ARCH_X86_64
		i386    = unix.AUDIT_ARCH_I386
		aarch64 = unix.AUDIT_ARCH_AARCH64
		arm     = unix.AUDIT_ARCH_ARM
		x32     = 0x40000000
		fork    = uint64(unix.SIGCHLD)
		newNS   = uint64(unix.CLONE_NEWNS | unix.SIGCHLD)
		high    = uint64(1) << 32
	)
	var (
		eperm  = retErrno(uint32(unix.EPERM))
		enosys = retErrno(uint32(unix.ENOSYS))
	)
	// x86-64 numbers from the kernel's syscall_64.tbl, spelled out where
	// x/sys/unix is compiled for another architecture.
	tests := []struct {
		name   string
		goarch string
		kernel [2]uint8
		arch   uint32
		nr     uint32
		arg0   uint64
		want   uint32
	}{
		{"getpid", "amd64", [2]uint8{6, 1}, x86, 39, 0, retAllow},
		{"read", "amd64", [2]uint8{6, 1}, x86, 0, 0, retAllow},
		{"ptrace", "amd64", [2]uint8{6, 1}, x86, 101, 0, retAllow},
		{"ptrace before 4.8", "amd64", [2]uint8{4, 4}, x86, 101, 0, eperm},
		{"chroot", "amd64", [2]uint8{6, 1}, x86, 161, 0, retAllow},
		{"clock_adjtime", "amd64", [2]uint8{6, 1}, x86, 305, 0, retAllow},
		{"name_to_handle_at", "amd64", [2]uint8{6, 1}, x86, 303, 0, retAllow},
		{"keyctl", "amd64", [2]uint8{6, 1}, x86, 250, 0, eperm},
		{"add_key", "amd64", [2]uint8{6, 1}, x86, 248, 0, eperm},
		{"mount", "amd64", [2]uint8{6, 1}, x86, 165, 0, eperm},
		{"umount2", "amd64", [2]uint8{6, 1}, x86, 166, 0, eperm},
		{"pivot_root", "amd64", [2]uint8{6, 1}, x86, 155, 0, eperm},
		{"fsopen", "amd64", [2]uint8{6, 1}, x86, 430, 0, eperm},
		{"unshare", "amd64", [2]uint8{6, 1}, x86, 272, 0, eperm},
		{"setns", "amd64", [2]uint8{6, 1}, x86, 308, 0, eperm},
		{"bpf", "amd64", [2]uint8{6, 1}, x86, 321, 0, eperm},
		{"perf_event_open", "amd64", [2]uint8{6, 1}, x86, 298, 0, eperm},
		{"userfaultfd", "amd64", [2]uint8{6, 1}, x86, 323, 0, eperm},
		{"open_by_handle_at", "amd64", [2]uint8{6, 1}, x86, 304, 0, eperm},
		{"kexec_load", "amd64", [2]uint8{6, 1}, x86, 246, 0, eperm},
		{"init_module", "amd64", [2]uint8{6, 1}, x86, 175, 0, eperm},
		{"reboot", "amd64", [2]uint8{6, 1}, x86, 169, 0, eperm},
		{"io_uring_setup", "amd64", [2]uint8{6, 1}, x86, 425, 0, eperm},
		// Refused by Docker, allowed by the former denylist.
		{"sethostname", "amd64", [2]uint8{6, 1}, x86, 170, 0, eperm},
		{"setdomainname", "amd64", [2]uint8{6, 1}, x86, 171, 0, eperm},
		{"mbind", "amd64", [2]uint8{6, 1}, x86, 237, 0, eperm},
		{"set_mempolicy", "amd64", [2]uint8{6, 1}, x86, 238, 0, eperm},
		{"migrate_pages", "amd64", [2]uint8{6, 1}, x86, 256, 0, eperm},
		{"move_pages", "amd64", [2]uint8{6, 1}, x86, 279, 0, eperm},
		{"fanotify_init", "amd64", [2]uint8{6, 1}, x86, 300, 0, eperm},
		{"pidfd_getfd", "amd64", [2]uint8{6, 1}, x86, 438, 0, eperm},
		{"process_madvise", "amd64", [2]uint8{6, 1}, x86, 440, 0, eperm},
		{"unassigned number", "amd64", [2]uint8{6, 1}, x86, 1000, 0, eperm},
		{"socket AF_INET", "amd64", [2]uint8{6, 1}, x86, 41, unix.AF_INET, retAllow},
		{"socket AF_UNIX", "amd64", [2]uint8{6, 1}, x86, 41, unix.AF_UNIX, retAllow},
		{"socket AF_NETLINK", "amd64", [2]uint8{6, 1}, x86, 41, unix.AF_NETLINK, retAllow},
		{"socket AF_INET6", "amd64", [2]uint8{6, 1}, x86, 41, unix.AF_INET6, retAllow},
		{"socket AF_VSOCK", "amd64", [2]uint8{6, 1}, x86, 41, unix.AF_VSOCK, eperm},
		{"socket AF_ALG", "amd64", [2]uint8{6, 1}, x86, 41, unix.AF_ALG, eperm},
		{"socket AF_INET high bits", "amd64", [2]uint8{6, 1}, x86, 41, high | unix.AF_INET, eperm},
		{"personality query", "amd64", [2]uint8{6, 1}, x86, 135, 0xffffffff, retAllow},
		{"personality PER_LINUX32", "amd64", [2]uint8{6, 1}, x86, 135, 8, retAllow},
		{"personality READ_IMPLIES_EXEC", "amd64", [2]uint8{6, 1}, x86, 135, 0x0400000, eperm},
		{"personality high bits", "amd64", [2]uint8{6, 1}, x86, 135, high | 8, eperm},
		{"clone3", "amd64", [2]uint8{6, 1}, x86, 435, 0, enosys},
		{"clone fork", "amd64", [2]uint8{6, 1}, x86, 56, fork, retAllow},
		{"clone thread", "amd64", [2]uint8{6, 1}, x86, 56, unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND, retAllow},
		{"clone newns", "amd64", [2]uint8{6, 1}, x86, 56, newNS, eperm},
		{"clone newuser", "amd64", [2]uint8{6, 1}, x86, 56, unix.CLONE_NEWUSER, eperm},
		{"clone newnet", "amd64", [2]uint8{6, 1}, x86, 56, unix.CLONE_NEWNET, eperm},
		{"x32 getpid", "amd64", [2]uint8{6, 1}, x86, x32 | 39, 0, retAllow},
		{"x32 mount", "amd64", [2]uint8{6, 1}, x86, x32 | 165, 0, eperm},
		{"x32 clone newpid", "amd64", [2]uint8{6, 1}, x86, x32 | 56, unix.CLONE_NEWPID, eperm},
		{"x32 rt_sigaction", "amd64", [2]uint8{6, 1}, x86, x32 | 512, 0, retAllow},
		{"x32 64-bit rt_sigaction number", "amd64", [2]uint8{6, 1}, x86, x32 | 13, 0, eperm},
		{"x32 personality high bits ignored", "amd64", [2]uint8{6, 1}, x86, x32 | 135, high | 8, retAllow},
		{"i386 getpid", "amd64", [2]uint8{6, 1}, i386, 20, 0, retAllow},
		{"i386 mount", "amd64", [2]uint8{6, 1}, i386, 21, 0, eperm},
		{"i386 keyctl", "amd64", [2]uint8{6, 1}, i386, 288, 0, eperm},
		{"i386 unshare", "amd64", [2]uint8{6, 1}, i386, 310, 0, eperm},
		{"i386 socketcall", "amd64", [2]uint8{6, 1}, i386, 102, 0, retAllow},
		{"i386 socket AF_VSOCK", "amd64", [2]uint8{6, 1}, i386, 359, unix.AF_VSOCK, eperm},
		{"i386 socket AF_INET", "amd64", [2]uint8{6, 1}, i386, 359, unix.AF_INET, retAllow},
		{"i386 clone fork", "amd64", [2]uint8{6, 1}, i386, 120, fork, retAllow},
		{"i386 clone newns", "amd64", [2]uint8{6, 1}, i386, 120, newNS, eperm},
		{"i386 clone3", "amd64", [2]uint8{6, 1}, i386, 435, 0, enosys},
		{"unknown arch", "amd64", [2]uint8{6, 1}, unix.AUDIT_ARCH_AARCH64, 39, 0, retKill},
		{"aarch64 getpid", "arm64", [2]uint8{6, 1}, aarch64, 172, 0, retAllow},
		{"aarch64 mount", "arm64", [2]uint8{6, 1}, aarch64, 40, 0, eperm},
		{"aarch64 clone newns", "arm64", [2]uint8{6, 1}, aarch64, 220, newNS, eperm},
		{"arm set_tls", "arm64", [2]uint8{6, 1}, arm, 0x0f0005, 0, retAllow},
		{"arm mount", "arm64", [2]uint8{6, 1}, arm, 21, 0, eperm},
		{"arm64 filter, x86-64 process", "arm64", [2]uint8{6, 1}, x86, 39, 0, retKill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			profile, ok := seccompDefaultProfile(tt.goarch)
			if !ok {
				t.Fatalf("no table for %s", tt.goarch)
			}
			prog, err := seccompProgram(profile, tt.kernel)
			if err != nil {
				t.Fatal(err)
			}
			if got := runBPF(t, prog, seccompData(tt.arch, tt.nr, tt.arg0)); got != tt.want {
				t.Errorf("action = %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestParseKernelRelease(t *testing.T) {
	tests := []struct {
		release string
		want    [2]uint8
		ok      bool
	}{
		{"6.18.0-1-amd64", [2]uint8{6, 18}, true},
		{"4.8", [2]uint8{4, 8}, true},
		{"5.10-rc5", [2]uint8{5, 10}, true},
		{"3.12.25-gentoo", [2]uint8{3, 12}, true},
		{"6", [2]uint8{}, false},
		{"x.y", [2]uint8{}, false},
	}
	for _, tt := range tests {
		got, err := parseKernelRelease(tt.release)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseKernelRelease(%q) = %v, %v; want %v, ok %t", tt.release, got, err, tt.want, tt.ok)
		}
	}
}

// TestSeccompKernel loads the filter on a throwaway thread of the test
// process and makes denied and allowed calls there.
func TestSeccompKernel(t *testing.T) {
	if _, ok := seccompDefaultProfile(runtime.GOARCH); !ok {
		testenv.Skip(t, "no seccomp table for %s", runtime.GOARCH)
	}
	errs := make(chan []error, 1)
	go func() {
		// The thread keeps the filter, so it must die with the goroutine.
		runtime.LockOSThread()
		if _, err := Install(false); err != nil {
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
			call(unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM),
			call(unix.SYS_SETHOSTNAME, 0, 0),
			call(unix.SYS_PERSONALITY, 0x0400000, 0),  // READ_IMPLIES_EXEC
			call(unix.SYS_PERSONALITY, 0xffffffff, 0), // query
		)
		errs <- got
	}()
	got := <-errs
	if len(got) == 1 {
		t.Fatal(got[0])
	}
	want := []error{unix.EPERM, unix.EPERM, unix.EPERM, unix.EPERM, unix.ENOSYS, nil, unix.EPERM, unix.EPERM, unix.EPERM, nil}
	for i := range want {
		if !errors.Is(got[i], want[i]) && got[i] != want[i] {
			t.Errorf("call %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

// TestSeccompChrootRules runs the chroot-mode filter through the
// interpreter for every ABI: signals to "all" and to process groups are
// refused, whatever the high bits of the argument hold, while the caller's
// own group (0), single processes and other calls pass; the namespace-mode
// filter still allows them all.
func TestSeccompChrootRules(t *testing.T) {
	const (
		x86     = unix.AUDIT_ARCH_X86_64
		i386    = unix.AUDIT_ARCH_I386
		aarch64 = unix.AUDIT_ARCH_AARCH64
		arm     = unix.AUDIT_ARCH_ARM
		x32     = 0x40000000
		minus1  = uint64(0xffffffff)       // -1 as an int
		minus7  = uint64(0xfffffff9)       // -7 as an int
		high    = uint64(0xdeadbeef) << 32 // ignored by the kernel for an int
		group   = uint64(unix.PIDFD_SIGNAL_PROCESS_GROUP)
		setown  = uint64(unix.F_SETOWN)
		setownx = uint64(unix.F_SETOWN_EX)
	)
	eperm := retErrno(uint32(unix.EPERM))
	tests := []struct {
		name   string
		goarch string
		arch   uint32
		nr     uint32
		args   [6]uint64
		want   uint32
	}{
		{"kill -1", "amd64", x86, 62, [6]uint64{minus1, 9}, eperm},
		{"kill -1 sign-extended", "amd64", x86, 62, [6]uint64{^uint64(0), 9}, eperm},
		{"kill -1 with high bits", "amd64", x86, 62, [6]uint64{high | minus1, 9}, eperm},
		{"kill -pgid", "amd64", x86, 62, [6]uint64{minus7, 9}, eperm},
		{"kill own group", "amd64", x86, 62, [6]uint64{0, 9}, retAllow},
		{"kill pid", "amd64", x86, 62, [6]uint64{1234, 9}, retAllow},
		{"kill pid with high bits", "amd64", x86, 62, [6]uint64{high | 1234, 9}, retAllow},
		{"tkill -1", "amd64", x86, 200, [6]uint64{minus1, 9}, eperm},
		{"tkill tid", "amd64", x86, 200, [6]uint64{55, 9}, retAllow},
		{"tgkill -1 tid", "amd64", x86, 234, [6]uint64{minus1, 55, 9}, eperm},
		{"tgkill tgid -1", "amd64", x86, 234, [6]uint64{55, minus1, 9}, eperm},
		{"tgkill tgid tid", "amd64", x86, 234, [6]uint64{55, 55, 9}, retAllow},
		{"rt_sigqueueinfo -1", "amd64", x86, 129, [6]uint64{minus1, 9}, eperm},
		{"rt_sigqueueinfo pid", "amd64", x86, 129, [6]uint64{55, 9}, retAllow},
		{"rt_tgsigqueueinfo tgid -1", "amd64", x86, 297, [6]uint64{55, minus1, 9}, eperm},
		{"pidfd_send_signal group", "amd64", x86, 424, [6]uint64{3, 9, 0, group}, eperm},
		{"pidfd_send_signal", "amd64", x86, 424, [6]uint64{3, 9, 0, 0}, retAllow},
		{"fcntl F_SETOWN -pgid", "amd64", x86, 72, [6]uint64{3, setown, minus7}, eperm},
		{"fcntl F_SETOWN pid", "amd64", x86, 72, [6]uint64{3, setown, 55}, retAllow},
		{"fcntl F_SETOWN_EX", "amd64", x86, 72, [6]uint64{3, setownx, 0}, eperm},
		{"fcntl F_GETFL", "amd64", x86, 72, [6]uint64{3, unix.F_GETFL}, retAllow},
		{"ioctl FIOSETOWN", "amd64", x86, 16, [6]uint64{3, ioctlFIOSETOWN}, eperm},
		{"ioctl SIOCSPGRP", "amd64", x86, 16, [6]uint64{3, unix.SIOCSPGRP}, eperm},
		{"ioctl TCGETS", "amd64", x86, 16, [6]uint64{0, unix.TCGETS}, retAllow},
		{"getpid", "amd64", x86, 39, [6]uint64{minus1}, retAllow},
		{"mount still refused", "amd64", x86, 165, [6]uint64{}, eperm},
		{"x32 kill -1", "amd64", x86, x32 | 62, [6]uint64{minus1, 9}, eperm},
		{"x32 kill pid", "amd64", x86, x32 | 62, [6]uint64{55, 9}, retAllow},
		{"i386 kill -1", "amd64", i386, 37, [6]uint64{minus1, 9}, eperm},
		{"i386 kill own group", "amd64", i386, 37, [6]uint64{0, 9}, retAllow},
		{"i386 fcntl64 F_SETOWN -pgid", "amd64", i386, 221, [6]uint64{3, setown, minus7}, eperm},
		{"aarch64 kill -1", "arm64", aarch64, 129, [6]uint64{minus1, 9}, eperm},
		{"aarch64 kill pid", "arm64", aarch64, 129, [6]uint64{55, 9}, retAllow},
		{"arm kill -1", "arm64", arm, 37, [6]uint64{minus1, 9}, eperm},
	}
	notified := map[string]bool{"kill -1": true, "kill -1 sign-extended": true, "kill -1 with high bits": true,
		"kill -pgid": true, "x32 kill -1": true, "i386 kill -1": true, "aarch64 kill -1": true, "arm kill -1": true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			profile, ok := seccompDefaultProfile(tt.goarch)
			if !ok {
				t.Fatalf("no table for %s", tt.goarch)
			}
			prog, err := seccompProgram(withChrootRules(profile, false), [2]uint8{6, 1})
			if err != nil {
				t.Fatal(err)
			}
			if got := runBPF(t, prog, seccompData6(tt.arch, tt.nr, tt.args)); got != tt.want {
				t.Errorf("chroot filter: action = %#x, want %#x", got, tt.want)
			}
			// With a listener, a kill(2) it would refuse goes to the init
			// instead, which lets the command's own group through.
			want := tt.want
			if notified[tt.name] {
				want = unix.SECCOMP_RET_USER_NOTIF
			}
			prog, err = seccompProgram(withChrootRules(profile, true), [2]uint8{6, 1})
			if err != nil {
				t.Fatal(err)
			}
			if got := runBPF(t, prog, seccompData6(tt.arch, tt.nr, tt.args)); got != want {
				t.Errorf("chroot filter with a listener: action = %#x, want %#x", got, want)
			}
			// Namespace mode keeps Docker's profile, which allows them all
			// (mount aside).
			prog, err = seccompProgram(profile, [2]uint8{6, 1})
			if err != nil {
				t.Fatal(err)
			}
			if got := runBPF(t, prog, seccompData6(tt.arch, tt.nr, tt.args)); got != retAllow && tt.nr != 165 {
				t.Errorf("namespace filter: action = %#x, want allow", got)
			}
		})
	}
}

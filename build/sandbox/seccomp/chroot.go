package seccomp

import "golang.org/x/sys/unix"

// negativeArg is the condition "argument i, a 32-bit int, is below zero";
// deny rules compare the low 32 bits only, as the kernel reads a pid_t.
func negativeArg(i uint8) seccompArg {
	return seccompArg{index: i, op: seccompOpGE, value: 1 << 31}
}

// argIs is the condition "argument i equals v".
func argIs(i uint8, v uint64) seccompArg {
	return seccompArg{index: i, op: seccompOpEQ, value: v}
}

// chrootSignalRules are the calls that chroot isolation refuses on top of
// Docker's profile, by system call name. Without a PID namespace of its
// own, a RUN shares the host's processes: kill(-1) would signal every one
// of them the caller may signal (as root with CAP_KILL: all), and a
// negative target a whole process group, which need not be the RUN's. So
// every signal aimed at a process group other than the command's own or at
// "all" is refused with EPERM. kill(0, sig) names the caller's own group
// and passes; the filter cannot know the command's process group id (the
// command gets it when it is forked, after the filter is loaded), so a
// kill with a negative target goes to the init (notify), which lets
// kill(-pgid) of the command's group through and refuses the rest (the
// listener Install returns; where the kernel cannot notify, all are
// refused). Refused too are the other ways to aim one: queued signals, pidfd_send_signal with
// PIDFD_SIGNAL_PROCESS_GROUP, and SIGIO/SIGURG owners set to a process
// group (fcntl F_SETOWN with a negative pid, F_SETOWN_EX, whose target
// hides behind a pointer, and the FIOSETOWN and SIOCSPGRP ioctls). tkill,
// tgkill and rt_tgsigqueueinfo take no group, and the kernel already refuses
// a target <= 0 with EINVAL; they are refused here for the same targets so
// that no signal call takes one. A positive pid cannot be told apart from
// the RUN's own processes by a filter: only a PID namespace (which
// sandbox.Run takes where the machine permits) keeps other processes out of reach.
var chrootSignalRules = []struct {
	name   string
	args   []seccompArg
	notify bool
}{
	{"kill", []seccompArg{negativeArg(0)}, true},
	{"tkill", []seccompArg{negativeArg(0)}, false},
	{"tgkill", []seccompArg{negativeArg(0)}, false},
	{"tgkill", []seccompArg{negativeArg(1)}, false},
	{"rt_sigqueueinfo", []seccompArg{negativeArg(0)}, false},
	{"rt_tgsigqueueinfo", []seccompArg{negativeArg(0)}, false},
	{"rt_tgsigqueueinfo", []seccompArg{negativeArg(1)}, false},
	{"pidfd_send_signal", []seccompArg{{index: 3, op: seccompOpMaskedEQ,
		value: unix.PIDFD_SIGNAL_PROCESS_GROUP, valueTwo: unix.PIDFD_SIGNAL_PROCESS_GROUP}}, false},
	{"fcntl", []seccompArg{argIs(1, unix.F_SETOWN), negativeArg(2)}, false},
	{"fcntl", []seccompArg{argIs(1, unix.F_SETOWN_EX)}, false},
	{"fcntl64", []seccompArg{argIs(1, unix.F_SETOWN), negativeArg(2)}, false},
	{"fcntl64", []seccompArg{argIs(1, unix.F_SETOWN_EX)}, false},
	{"ioctl", []seccompArg{argIs(1, ioctlFIOSETOWN)}, false},
	{"ioctl", []seccompArg{argIs(1, unix.SIOCSPGRP)}, false},
}

// ioctlFIOSETOWN is FIOSETOWN from <asm-generic/sockios.h>, which
// golang.org/x/sys/unix does not define.
const ioctlFIOSETOWN = 0x8901

// withChrootRules returns profile with chrootSignalRules added as deny
// rules to every ABI, for each number the ABI's table gives the call's
// name; with notify, the rules that ask for it notify the filter's
// listener instead of failing. The profile's own rules are unchanged.
func withChrootRules(profile seccompProfile, notify bool) seccompProfile {
	abis := make([]seccompABI, len(profile.abis))
	for i, abi := range profile.abis {
		abi.deny = nil
		for _, r := range chrootSignalRules {
			for _, c := range abi.calls {
				if c.name == r.name {
					abi.deny = append(abi.deny, seccompCall{nr: c.nr, name: c.name, errno: uint32(unix.EPERM),
						args: r.args, notify: notify && r.notify})
				}
			}
		}
		abis[i] = abi
	}
	profile.abis = abis
	return profile
}

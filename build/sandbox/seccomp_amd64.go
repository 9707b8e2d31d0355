package sandbox

import "golang.org/x/sys/unix"

// seccompArchs are the architectures an amd64 process may call the kernel
// with: x86-64 and x32 (one table, x32's bit masked off) and i386, whose
// numbers x/sys/unix defines only on 386 and are written out here.
var seccompArchs = []seccompArch{
	{
		audit: unix.AUDIT_ARCH_X86_64,
		mask:  0x40000000,
		denied: []uint32{
			unix.SYS_ACCT, unix.SYS_ADD_KEY, unix.SYS_BPF, unix.SYS_CLOCK_ADJTIME,
			unix.SYS_CLOCK_SETTIME, unix.SYS_CREATE_MODULE, unix.SYS_DELETE_MODULE,
			unix.SYS_FINIT_MODULE, unix.SYS_GET_KERNEL_SYMS, unix.SYS_INIT_MODULE,
			unix.SYS_IOPERM, unix.SYS_IOPL, unix.SYS_KCMP, unix.SYS_KEXEC_FILE_LOAD,
			unix.SYS_KEXEC_LOAD, unix.SYS_KEYCTL, unix.SYS_LOOKUP_DCOOKIE, unix.SYS_MOUNT,
			unix.SYS_MOUNT_SETATTR, unix.SYS_MOVE_MOUNT, unix.SYS_OPEN_TREE,
			unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK,
			unix.SYS_NAME_TO_HANDLE_AT, unix.SYS_NFSSERVCTL, unix.SYS_OPEN_BY_HANDLE_AT,
			unix.SYS_PERF_EVENT_OPEN, unix.SYS_PIVOT_ROOT, unix.SYS_QUOTACTL,
			unix.SYS_QUOTACTL_FD, unix.SYS_REBOOT, unix.SYS_REQUEST_KEY, unix.SYS_SETNS,
			unix.SYS_SETTIMEOFDAY, unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_SYSFS,
			unix.SYS__SYSCTL, unix.SYS_UMOUNT2, unix.SYS_UNSHARE, unix.SYS_USELIB,
			unix.SYS_USERFAULTFD, unix.SYS_USTAT, unix.SYS_VHANGUP, unix.SYS_SYSLOG,
			unix.SYS_QUERY_MODULE, unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER,
			unix.SYS_IO_URING_REGISTER, unix.SYS_OPEN_TREE_ATTR,
		},
		clone:  unix.SYS_CLONE,
		clone3: unix.SYS_CLONE3,
	},
	{
		audit: unix.AUDIT_ARCH_I386,
		denied: []uint32{
			51,  // acct
			286, // add_key
			357, // bpf
			343, // clock_adjtime
			405, // clock_adjtime64
			264, // clock_settime
			404, // clock_settime64
			127, // create_module
			129, // delete_module
			350, // finit_module
			130, // get_kernel_syms
			128, // init_module
			101, // ioperm
			110, // iopl
			349, // kcmp
			283, // kexec_load
			288, // keyctl
			253, // lookup_dcookie
			21,  // mount
			442, // mount_setattr
			429, // move_mount
			428, // open_tree
			430, // fsopen
			431, // fsconfig
			432, // fsmount
			433, // fspick
			341, // name_to_handle_at
			169, // nfsservctl
			342, // open_by_handle_at
			336, // perf_event_open
			217, // pivot_root
			131, // quotactl
			443, // quotactl_fd
			88,  // reboot
			287, // request_key
			346, // setns
			79,  // settimeofday
			25,  // stime
			87,  // swapon
			115, // swapoff
			135, // sysfs
			149, // _sysctl
			22,  // umount
			52,  // umount2
			310, // unshare
			86,  // uselib
			374, // userfaultfd
			62,  // ustat
			111, // vhangup
			103, // syslog
			167, // query_module
			166, // vm86
			113, // vm86old
			134, // bdflush
			425, // io_uring_setup
			426, // io_uring_enter
			427, // io_uring_register
			467, // open_tree_attr
		},
		clone:  120,
		clone3: 435,
	},
}

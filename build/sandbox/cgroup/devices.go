package cgroup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// deviceRule allows one class of device accesses, as a line of cgroup v1's
// devices.allow does.
type deviceRule struct {
	block        bool  // a block device, else a character device
	major, minor int64 // -1 matches any
	access       string
}

// anyDev matches every major or minor number.
const anyDev = -1

// allowedDevices are the devices a RUN may use, unless insecure: creating
// any device node (so that an image can hold one, as in Docker), and reading
// and writing only the sandbox's own /dev nodes: null, zero, full, random,
// urandom, tty, ptmx and the pseudo-terminals of its devpts. This is runc's
// default allowlist without /dev/console (a RUN has no console) and
// /dev/net/tun (the sandbox creates no such node).
var allowedDevices = []deviceRule{
	{false, anyDev, anyDev, "m"},
	{true, anyDev, anyDev, "m"},
	{false, 1, 3, "rwm"},        // null
	{false, 1, 5, "rwm"},        // zero
	{false, 1, 7, "rwm"},        // full
	{false, 1, 8, "rwm"},        // random
	{false, 1, 9, "rwm"},        // urandom
	{false, 5, 0, "rwm"},        // tty
	{false, 5, 2, "rwm"},        // ptmx
	{false, 136, anyDev, "rwm"}, // pts/N
}

// v1Line renders r for cgroup v1's devices.allow: "c 1:3 rwm".
func (r deviceRule) v1Line() string {
	num := func(n int64) string {
		if n == anyDev {
			return "*"
		}
		return strconv.FormatInt(n, 10)
	}
	t := "c"
	if r.block {
		t = "b"
	}
	return fmt.Sprintf("%s %s:%s %s", t, num(r.major), num(r.minor), r.access)
}

// accessBits returns r's access as BPF_DEVCG_ACC_* bits.
func (r deviceRule) accessBits() int32 {
	var a int32
	for _, c := range r.access {
		switch c {
		case 'm':
			a |= unix.BPF_DEVCG_ACC_MKNOD
		case 'r':
			a |= unix.BPF_DEVCG_ACC_READ
		case 'w':
			a |= unix.BPF_DEVCG_ACC_WRITE
		}
	}
	return a
}

// bpfInsn is one eBPF instruction.
type bpfInsn struct {
	code uint8
	regs uint8 // source register in the high nibble, destination in the low
	off  int16
	imm  int32
}

// The eBPF registers the device program uses.
const (
	rRet    = 0 // return value
	rCtx    = 1 // *bpf_cgroup_dev_ctx on entry, then scratch
	rType   = 2 // BPF_DEVCG_DEV_BLOCK or BPF_DEVCG_DEV_CHAR
	rAccess = 3 // BPF_DEVCG_ACC_* bits asked for
	rMajor  = 4
	rMinor  = 5
)

func insn(code uint8, dst, src uint8, off int16, imm int32) bpfInsn {
	return bpfInsn{code: code, regs: src<<4 | dst, off: off, imm: imm}
}

// deviceProgram assembles a BPF_PROG_TYPE_CGROUP_DEVICE program that
// returns 1 (allow) for an access one of rules allows and 0 (deny, EPERM)
// for any other. The context is struct bpf_cgroup_dev_ctx: access_type
// (type in the low 16 bits, access in the high 16), major, minor, each a
// u32.
func deviceProgram(rules []deviceRule) []bpfInsn {
	const (
		ldxW  = unix.BPF_LDX | unix.BPF_W | unix.BPF_MEM
		movK  = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K
		movX  = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_X
		andK  = unix.BPF_ALU64 | unix.BPF_AND | unix.BPF_K
		rshK  = unix.BPF_ALU64 | unix.BPF_RSH | unix.BPF_K
		jneK  = unix.BPF_JMP | unix.BPF_JNE | unix.BPF_K
		exitI = unix.BPF_JMP | unix.BPF_EXIT
	)
	prog := []bpfInsn{
		insn(ldxW, rType, rCtx, 0, 0),
		insn(movX, rAccess, rType, 0, 0),
		insn(andK, rType, 0, 0, 0xffff),
		insn(rshK, rAccess, 0, 0, 16),
		insn(ldxW, rMajor, rCtx, 4, 0),
		insn(ldxW, rMinor, rCtx, 8, 0),
	}
	for _, r := range rules {
		// Each rule is a block whose failed checks jump past its end,
		// to the next rule; the jump offsets are set once it is complete.
		var block []bpfInsn
		typ := int32(unix.BPF_DEVCG_DEV_CHAR)
		if r.block {
			typ = unix.BPF_DEVCG_DEV_BLOCK
		}
		block = append(block, insn(jneK, rType, 0, 0, typ))
		// Every access bit asked for must be among the rule's.
		block = append(block,
			insn(movX, rCtx, rAccess, 0, 0),
			insn(andK, rCtx, 0, 0, ^r.accessBits()&0xffff),
			insn(jneK, rCtx, 0, 0, 0))
		if r.major != anyDev {
			block = append(block, insn(jneK, rMajor, 0, 0, int32(r.major)))
		}
		if r.minor != anyDev {
			block = append(block, insn(jneK, rMinor, 0, 0, int32(r.minor)))
		}
		block = append(block, insn(movK, rRet, 0, 0, 1), insn(exitI, 0, 0, 0, 0))
		for i := range block {
			if block[i].code == jneK {
				block[i].off = int16(len(block) - i - 1)
			}
		}
		prog = append(prog, block...)
	}
	return append(prog, insn(movK, rRet, 0, 0, 0), insn(exitI, 0, 0, 0, 0))
}

// encode returns prog in the kernel's struct bpf_insn layout.
func encode(prog []bpfInsn) []byte {
	b := make([]byte, 0, 8*len(prog))
	for _, in := range prog {
		b = append(b, in.code, in.regs)
		b = binary.NativeEndian.AppendUint16(b, uint16(in.off))
		b = binary.NativeEndian.AppendUint32(b, uint32(in.imm))
	}
	return b
}

// bpf calls bpf(2) with attr, a prefix of union bpf_attr.
func bpf(cmd int, attr []byte) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	runtime.KeepAlive(attr)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// loadDeviceProgram loads deviceProgram(allowedDevices) into the kernel and
// returns its fd, which the caller closes.
func loadDeviceProgram() (int, error) {
	code := encode(deviceProgram(allowedDevices))
	// The program calls no kernel helper, GPL-only or other, so the
	// license string only has to be there.
	license := []byte("none\x00")
	// union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns,
	// license, then fields left zero (no log, no name).
	attr := make([]byte, 72)
	binary.NativeEndian.PutUint32(attr[0:], unix.BPF_PROG_TYPE_CGROUP_DEVICE)
	binary.NativeEndian.PutUint32(attr[4:], uint32(len(code)/8))
	binary.NativeEndian.PutUint64(attr[8:], uint64(uintptr(unsafe.Pointer(&code[0]))))
	binary.NativeEndian.PutUint64(attr[16:], uint64(uintptr(unsafe.Pointer(&license[0]))))
	// The verifier answers EAGAIN when it is interrupted (a signal, or
	// memory pressure); the load is then simply tried again, as libbpf
	// does.
	var fd int
	var err error
	for range 5 {
		if fd, err = bpf(unix.BPF_PROG_LOAD, attr); !errors.Is(err, unix.EAGAIN) {
			break
		}
	}
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	if err != nil {
		return -1, fmt.Errorf("load device filter: %w", err)
	}
	unix.CloseOnExec(fd)
	return fd, nil
}

// deviceProg is the device filter as loaded into the kernel, once per
// process: one program can be attached to any number of cgroups, each of
// which holds its own reference, so every run's cgroup gets the same one.
// Its fd stays open (close-on-exec) for the life of the process.
var deviceProg struct {
	sync.Mutex
	fd     int
	loaded bool
	loads  int // successful loads, for tests
}

// deviceProgramFD returns the fd of the loaded device filter, loading it on
// first use. A failed load is not kept: the next call tries again.
func deviceProgramFD() (int, error) {
	deviceProg.Lock()
	defer deviceProg.Unlock()
	if !deviceProg.loaded {
		fd, err := loadDeviceProgram()
		if err != nil {
			return -1, err
		}
		deviceProg.fd, deviceProg.loaded = fd, true
		deviceProg.loads++
	}
	return deviceProg.fd, nil
}

// attachDeviceProgram attaches the device filter to the cgroup v2 directory
// dir, so that it applies to every process in it. The program stays
// attached until the cgroup is removed. BPF_F_ALLOW_MULTI lets it run
// together with programs attached above (systemd's, for one), every one of
// which must allow an access.
func attachDeviceProgram(dir string) error {
	prog, err := deviceProgramFD()
	if err != nil {
		return err
	}
	cg, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("attach device filter: %w", err)
	}
	defer unix.Close(cg)
	// union bpf_attr, BPF_PROG_ATTACH: target_fd, attach_bpf_fd,
	// attach_type, attach_flags, replace_bpf_fd.
	attr := make([]byte, 20)
	binary.NativeEndian.PutUint32(attr[0:], uint32(cg))
	binary.NativeEndian.PutUint32(attr[4:], uint32(prog))
	binary.NativeEndian.PutUint32(attr[8:], unix.BPF_CGROUP_DEVICE)
	binary.NativeEndian.PutUint32(attr[12:], unix.BPF_F_ALLOW_MULTI)
	if _, err := bpf(unix.BPF_PROG_ATTACH, attr); err != nil {
		return fmt.Errorf("attach device filter to %s: %w", dir, err)
	}
	return nil
}

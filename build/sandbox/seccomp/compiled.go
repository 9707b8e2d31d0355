package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Filters are the compiled filters Install loads. Compile builds them once
// in the builder, which sends them to every sandbox init in its config, so
// that no init spends a millisecond and a quarter of a megabyte building
// the same program again (issue 19). Each is classic BPF, 8 bytes per
// instruction in the machine's byte order.
type Filters struct {
	// Main is the filter to load.
	Main []byte `json:"main,omitempty"`
	// NoTable is set, and Main nil, where the architecture has no table:
	// then only no_new_privs is set. Zero Filters are refused, so that a
	// config that lost its filters cannot run a command without one.
	NoTable bool `json:"noTable,omitempty"`
	// Notify is chroot mode's filter whose signal rules notify a listener,
	// tried before Main on Linux 5.5 and later; nil otherwise.
	Notify []byte `json:"notify,omitempty"`
}

// Compile builds the filters Install(chrootSignals) would load on this
// machine.
func Compile(chrootSignals bool) (Filters, error) {
	profile, ok := seccompDefaultProfile(runtime.GOARCH)
	if !ok {
		return Filters{NoTable: true}, nil
	}
	kernel, err := kernelVersion()
	if err != nil {
		return Filters{}, fmt.Errorf("build seccomp filter: %w", err)
	}
	var f Filters
	// SECCOMP_USER_NOTIF_FLAG_CONTINUE, which the listener's server answers
	// with, came in Linux 5.5.
	if chrootSignals && kernelAtLeast(kernel, [2]uint8{5, 5}) {
		prog, err := seccompProgram(withChrootRules(profile, true), kernel)
		if err != nil {
			return Filters{}, err
		}
		f.Notify = encodeFilter(prog)
	}
	if chrootSignals {
		profile = withChrootRules(profile, false)
	}
	prog, err := seccompProgram(profile, kernel)
	if err != nil {
		return Filters{}, err
	}
	f.Main = encodeFilter(prog)
	return f, nil
}

// InstallFilters is Install with filters compiled by Compile: it sets
// no_new_privs and loads f on the calling thread, Notify first where it is
// set and the kernel takes it (then it returns the listener), else Main.
// The same rules as for Install apply to the caller.
func InstallFilters(f Filters) (listener *os.File, err error) {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("set no_new_privs: %w", err)
	}
	if f.Main == nil {
		if !f.NoTable || f.Notify != nil {
			return nil, errors.New("load seccomp filter: no filter")
		}
		return nil, nil
	}
	if f.Notify != nil {
		prog, err := decodeFilter(f.Notify)
		if err != nil {
			return nil, err
		}
		fd, err := loadProgram(prog, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER)
		if err == nil {
			return os.NewFile(uintptr(fd), "seccomp listener"), nil
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EINVAL) {
			return nil, err
		}
	}
	prog, err := decodeFilter(f.Main)
	if err != nil {
		return nil, err
	}
	_, err = loadProgram(prog, 0)
	return nil, err
}

// loadProgram loads prog on the calling thread with flags, returning what
// seccomp(2) returns (with SECCOMP_FILTER_FLAG_NEW_LISTENER, the listener
// fd).
func loadProgram(prog []unix.SockFilter, flags uintptr) (int, error) {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return -1, fmt.Errorf("load seccomp filter: %w", errno)
	}
	return int(r), nil
}

// maxInsns is the kernel's limit on one classic BPF program (BPF_MAXINSNS).
const maxInsns = 4096

func encodeFilter(prog []unix.SockFilter) []byte {
	b := make([]byte, 0, 8*len(prog))
	for _, in := range prog {
		b = binary.NativeEndian.AppendUint16(b, in.Code)
		b = append(b, in.Jt, in.Jf)
		b = binary.NativeEndian.AppendUint32(b, in.K)
	}
	return b
}

func decodeFilter(b []byte) ([]unix.SockFilter, error) {
	if len(b) == 0 || len(b)%8 != 0 || len(b)/8 > maxInsns {
		return nil, fmt.Errorf("load seccomp filter: %d bytes is not a program", len(b))
	}
	prog := make([]unix.SockFilter, len(b)/8)
	for i := range prog {
		in := b[8*i:]
		prog[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(in), Jt: in[2], Jf: in[3], K: binary.NativeEndian.Uint32(in[4:])}
	}
	return prog, nil
}

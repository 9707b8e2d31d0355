// Package binfmt finds which foreign platforms this machine can run through
// the kernel's binfmt_misc handlers (QEMU user emulation), and registers
// Debian's qemu-user-static handlers.
//
// Detection is what the kernel does: a handler runs a platform's programs
// when its magic, under its mask, matches the ELF header of that platform.
// A handler is usable in a RUN sandbox only with the F (fix binary) flag,
// which opens the interpreter at registration: without it the kernel looks
// the interpreter up inside the image's root, where it is not.
package binfmt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Dir is where binfmt_misc is mounted.
const Dir = "/proc/sys/fs/binfmt_misc"

// Package is the Debian package whose handlers Install registers.
const Package = "qemu-user-static"

// Handler is one binfmt_misc entry.
type Handler struct {
	Name        string // file name, e.g. qemu-aarch64
	Enabled     bool
	Interpreter string
	Flags       string // e.g. "POCF"
	Offset      int
	Magic, Mask []byte // nil for extension (E) handlers
}

// Fixed reports whether the interpreter was opened at registration (F).
func (h Handler) Fixed() bool { return strings.Contains(h.Flags, "F") }

// matches reports whether h would run a file starting with header.
func (h Handler) matches(header []byte) bool {
	if len(h.Magic) == 0 || h.Offset < 0 || h.Offset+len(h.Magic) > len(header) {
		return false
	}
	for i, m := range h.Magic {
		mask := byte(0xff)
		if i < len(h.Mask) {
			mask = h.Mask[i]
		}
		if header[h.Offset+i]&mask != m&mask {
			return false
		}
	}
	return true
}

// maxEntry bounds one handler file (the kernel's are well under a page).
const maxEntry = 64 << 10

// Read lists the handlers registered in dir (a binfmt_misc mount). A dir
// that is not mounted, or whose status is disabled, has none.
func Read(dir string) ([]Handler, error) {
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read binfmt_misc: %w", err)
	}
	if strings.TrimSpace(string(status)) != "enabled" {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read binfmt_misc: %w", err)
	}
	var hs []Handler
	for _, e := range ents {
		if n := e.Name(); n == "status" || n == "register" || !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read binfmt_misc: %w", err)
		}
		b := make([]byte, maxEntry)
		n, err := f.Read(b)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read binfmt_misc handler %s: %w", e.Name(), err)
		}
		h, err := parseHandler(e.Name(), b[:n])
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// parseHandler reads the kernel's description of one handler.
func parseHandler(name string, b []byte) (Handler, error) {
	h := Handler{Name: name}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		var err error
		switch k {
		case "enabled":
			h.Enabled = true
		case "interpreter":
			h.Interpreter = v
		case "flags:":
			h.Flags = v
		case "offset":
			h.Offset, err = strconv.Atoi(v)
		case "magic":
			h.Magic, err = hex.DecodeString(v)
		case "mask":
			h.Mask, err = hex.DecodeString(v)
		}
		if err != nil {
			return Handler{}, fmt.Errorf("binfmt_misc handler %s: %s: %w", name, k, err)
		}
	}
	return h, nil
}

// elfArch is what an ELF header says about a platform's programs.
type elfArch struct {
	class   byte // 1: 32-bit, 2: 64-bit
	big     bool // big-endian
	machine uint16
}

// elfArches maps a GOARCH-style architecture to its ELF header fields.
var elfArches = map[string]elfArch{
	"amd64":    {2, false, 62},
	"386":      {1, false, 3},
	"arm64":    {2, false, 183},
	"arm":      {1, false, 40},
	"riscv64":  {2, false, 243},
	"ppc64le":  {2, false, 21},
	"ppc64":    {2, true, 21},
	"s390x":    {2, true, 22},
	"mips64le": {2, false, 8},
	"mips64":   {2, true, 8},
	"mipsle":   {1, false, 8},
	"mips":     {1, true, 8},
	"loong64":  {2, false, 258},
}

// ELFHeader returns the first 20 bytes of an executable of architecture
// arch (GOARCH names), as binfmt_misc magics test them.
func ELFHeader(arch string) ([]byte, bool) {
	a, ok := elfArches[arch]
	if !ok {
		return nil, false
	}
	h := []byte{0x7f, 'E', 'L', 'F', a.class, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	var order binary.ByteOrder = binary.LittleEndian
	if a.big {
		h[5] = 2
		order = binary.BigEndian
	}
	order.PutUint16(h[16:], 2) // ET_EXEC
	order.PutUint16(h[18:], a.machine)
	return h, true
}

// Native reports whether the host runs programs of p without emulation:
// its own architecture, and 32-bit x86 on amd64.
func Native(p v1.Platform) bool {
	if p.OS != "linux" {
		return false
	}
	return p.Architecture == runtime.GOARCH || (runtime.GOARCH == "amd64" && p.Architecture == "386")
}

// ErrNoEmulator is a platform the host cannot run: no enabled handler
// matches its programs, or the one that does lacks the F flag.
var ErrNoEmulator = errors.New("no emulator")

// Find returns the enabled handler of hs that runs programs of platform
// p. Its error wraps ErrNoEmulator and says what to install.
func Find(hs []Handler, p v1.Platform) (Handler, error) {
	plat := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		plat += "/" + p.Variant
	}
	if p.OS != "linux" {
		return Handler{}, fmt.Errorf("%w for %s: only linux programs can run", ErrNoEmulator, plat)
	}
	header, ok := ELFHeader(p.Architecture)
	if !ok {
		return Handler{}, fmt.Errorf("%w for %s: unknown architecture", ErrNoEmulator, plat)
	}
	var unfixed *Handler
	for i, h := range hs {
		if !h.Enabled || !h.matches(header) {
			continue
		}
		if h.Fixed() {
			return h, nil
		}
		unfixed = &hs[i]
	}
	if unfixed != nil {
		return Handler{}, fmt.Errorf("%w for %s: the binfmt_misc handler %s has no F flag, so its interpreter %s cannot be found inside the build's root; run 'builder emulators --install' as root, which registers %s's handlers with it",
			ErrNoEmulator, plat, unfixed.Name, unfixed.Interpreter, Package)
	}
	return Handler{}, fmt.Errorf("%w for %s: no binfmt_misc handler runs its programs; install Debian's %s and run 'builder emulators --install' as root",
		ErrNoEmulator, plat, Package)
}

// Platforms lists the foreign platforms hs can run, sorted, with the
// handler of each.
func Platforms(hs []Handler) map[string]Handler {
	out := map[string]Handler{}
	for arch := range elfArches {
		p := v1.Platform{OS: "linux", Architecture: arch}
		if Native(p) {
			continue
		}
		if h, err := Find(hs, p); err == nil {
			out[p.OS+"/"+arch] = h
		}
	}
	return out
}

// SortedNames returns the keys of m in order.
func SortedNames(m map[string]Handler) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Rule is one handler definition, in the kernel's register format
// (:name:type:offset:magic:mask:interpreter:flags).
type Rule struct {
	Name, Line string
	File       string // the binfmt.d file it came from
}

// ReadRules reads the qemu-*.conf handler definitions qemu-user-static
// installs in confDir (/usr/lib/binfmt.d), without the host's own
// architecture's.
func ReadRules(confDir string) ([]Rule, error) {
	files, err := filepath.Glob(filepath.Join(confDir, "qemu-*.conf"))
	if err != nil {
		return nil, err
	}
	var rules []Rule
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' || line[0] == ';' {
				continue
			}
			fields := strings.Split(line[1:], line[:1])
			if len(fields) < 6 || fields[0] == "" {
				return nil, fmt.Errorf("%s: not a binfmt_misc rule: %q", f, line)
			}
			rules = append(rules, Rule{Name: fields[0], Line: line, File: f})
		}
	}
	return rules, nil
}

// Register registers rules in dir (a binfmt_misc mount) that it does not
// have yet, skipping rules for programs the host runs natively; it
// returns the names it registered.
func Register(dir string, rules []Rule) ([]string, error) {
	have, err := Read(dir)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, h := range have {
		names[h.Name] = true
	}
	native, _ := ELFHeader(runtime.GOARCH)
	var done []string
	for _, r := range rules {
		if names[r.Name] {
			continue
		}
		if h, err := parseRule(r); err == nil && h.matches(native) {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "register"), []byte(r.Line), 0); err != nil {
			return done, fmt.Errorf("register %s (from %s): %w", r.Name, r.File, err)
		}
		done = append(done, r.Name)
	}
	return done, nil
}

// parseRule reads the magic and mask of a magic (M) rule, whose bytes are
// written with \x escapes.
func parseRule(r Rule) (Handler, error) {
	sep := r.Line[:1]
	f := strings.Split(r.Line[1:], sep)
	if len(f) < 6 || f[1] != "M" {
		return Handler{}, fmt.Errorf("rule %s: not a magic rule", r.Name)
	}
	h := Handler{Name: r.Name, Enabled: true, Interpreter: f[5]}
	if len(f) > 6 {
		h.Flags = f[6]
	}
	if f[2] != "" {
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return Handler{}, fmt.Errorf("rule %s: offset: %w", r.Name, err)
		}
		h.Offset = n
	}
	var err error
	if h.Magic, err = unescape(f[3]); err != nil {
		return Handler{}, fmt.Errorf("rule %s: magic: %w", r.Name, err)
	}
	if h.Mask, err = unescape(f[4]); err != nil {
		return Handler{}, fmt.Errorf("rule %s: mask: %w", r.Name, err)
	}
	return h, nil
}

// unescape decodes binfmt_misc's \xHH escapes.
func unescape(s string) ([]byte, error) {
	var out bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] == 'x' {
			if i+4 > len(s) {
				return nil, errors.New("short \\x escape")
			}
			b, err := hex.DecodeString(s[i+2 : i+4])
			if err != nil {
				return nil, err
			}
			out.Write(b)
			i += 3
			continue
		}
		out.WriteByte(s[i])
	}
	return out.Bytes(), nil
}

// Mount mounts binfmt_misc on dir unless it is mounted there already (its
// register file exists). The mount stays: it is the machine's
// configuration, as systemd's proc-sys-fs-binfmt_misc.mount makes it.
func Mount(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "register")); err == nil {
		return nil
	}
	if err := unix.Mount("binfmt_misc", dir, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount binfmt_misc on %s: %w", dir, err)
	}
	return nil
}

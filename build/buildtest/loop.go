package buildtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Secret is what SecretLoop's backing file holds at its start.
const Secret = "SECRET-5c1f0e"

// LoopDevice is a host loop device attached to a file that holds Secret,
// for tests that check a sandbox cannot reach host block devices.
type LoopDevice struct {
	File         string // the backing file
	Path         string // the device, e.g. /dev/loop3
	Major, Minor uint32
	content      []byte
}

// SecretLoop attaches a loop device to a new 64 KiB file holding Secret and
// detaches it when t ends, whatever the test's outcome. It needs root and
// losetup.
func SecretLoop(t testing.TB) *LoopDevice {
	t.Helper()
	RequireRoot(t)
	losetup := RequireTool(t, "losetup")
	content := make([]byte, 64<<10)
	copy(content, Secret+"\n")
	file := filepath.Join(t.TempDir(), "secret.img")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "-f", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	return &LoopDevice{File: file, Path: dev, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev), content: content}
}

// CheckUnchanged fails t when the backing file no longer holds what
// SecretLoop wrote, after flushing the device's buffers to it.
func (l *LoopDevice) CheckUnchanged(t testing.TB) {
	t.Helper()
	if f, err := os.Open(l.Path); err == nil {
		_ = unix.Fsync(int(f.Fd()))
		f.Close()
	}
	b, err := os.ReadFile(l.File)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, l.content) {
		t.Errorf("the loop device's backing file %s changed", l.File)
	}
}

package build

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestCopySocket is BuildKit's testCopySocket (git cannot hold a socket
// for a conformance case): a unix socket in the context is copied by
// "COPY . /" as an empty regular file.
func TestCopySocket(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	ctxDir := filepath.Join(dir, "context")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY . /\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(ctxDir, "socket.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	res, _ := f.mustBuild(dir)
	fi, err := os.Lstat(filepath.Join(unpack(t, res.Image).rootfs, "socket.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Errorf("socket.sock copied as %v (%d bytes), want an empty regular file", fi.Mode(), fi.Size())
	}
}

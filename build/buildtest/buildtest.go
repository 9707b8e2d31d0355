// Package buildtest makes the fixtures builder's integration tests share: a
// busybox base image made from Debian's busybox-static, and a registry on
// loopback to serve it. Nothing here reaches beyond this machine.
package buildtest

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/internal/testenv"
)

// BusyboxPath is where Debian's busybox-static installs the binary.
const BusyboxPath = "/bin/busybox"

// Passwd and Group are the base image's account files.
const (
	Passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n"
	Group  = "root:x:0:\nnobody:x:65534:\napp:x:1000:\n"
)

// RequireRoot skips t unless it runs as root; under
// BUILDER_TEST_REQUIRE_ROOT (CI) it fails instead. See testenv.
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
}

// RequireTool returns the path of a command, or skips t (fails it under
// BUILDER_TEST_REQUIRE_ROOT) when it is not installed. See testenv.
func RequireTool(t testing.TB, tool string) string {
	t.Helper()
	return testenv.RequireTool(t, tool)
}

// NormalizeModes gives every directory and regular file below dir the
// mode git records for it (0755 for directories and for files with an
// execute bit, 0644 for other files), undoing what the checkout's umask
// did: a fixture cloned with umask 002 would otherwise carry group-write
// bits into the images the tests build. Symlinks keep theirs.
func NormalizeModes(t testing.TB, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Chmod(p, 0o755)
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Mode()&0o111 != 0 {
				return os.Chmod(p, 0o755)
			}
			return os.Chmod(p, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("normalize modes below %s: %v", dir, err)
	}
}

// BusyboxLayer returns an uncompressed layer tar holding busybox, its applet
// links, /etc/passwd, /etc/group and the usual top-level directories.
func BusyboxLayer(t testing.TB) []byte {
	t.Helper()
	RequireTool(t, BusyboxPath)
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	return busyboxLayer(t, bb)
}

// busyboxLayer is BusyboxLayer with the busybox binary bb, of any
// architecture; the applet links are the host busybox's (same version).
func busyboxLayer(t testing.TB, bb []byte) []byte {
	t.Helper()
	RequireTool(t, BusyboxPath)
	list, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	dir := func(name string, mode int64) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime})
	}
	file := func(name string, mode int64, data []byte) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime})
		tw.Write(data)
	}
	for _, d := range []string{"bin", "etc", "home", "root", "sbin", "usr", "usr/bin", "usr/local", "usr/local/bin", "usr/sbin", "var"} {
		dir(d, 0o755)
	}
	dir("tmp", 0o1777)
	file("bin/busybox", 0o755, bb)
	for _, a := range strings.Fields(string(list)) {
		if a == "busybox" {
			continue
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: mtime})
	}
	file("etc/passwd", 0o644, []byte(Passwd))
	file("etc/group", 0o644, []byte(Group))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// BusyboxImage returns a one-layer busybox image with Docker's default PATH
// and CMD ["sh"].
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	return busyboxImage(t, BusyboxLayer(t))
}

// busyboxImage is the linux/amd64 image of a busybox layer tar.
func busyboxImage(t testing.TB, data []byte) v1.Image {
	t.Helper()
	created := v1.Time{Time: time.Unix(1700000000, 0).UTC()}
	return OneLayerImage(t, LayerFromTar(t, data), v1.History{CreatedBy: "buildtest busybox", Created: created}, created, "sh")
}

// LayerFromTar returns an OCI layer (gzip) of the uncompressed tar data.
func LayerFromTar(t testing.TB, data []byte) v1.Layer {
	t.Helper()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return layer
}

// OneLayerImage returns a linux/amd64 OCI image of layer, with history
// entry hist, creation time created, Docker's default PATH and CMD [cmd].
func OneLayerImage(t testing.TB, layer v1.Layer, hist v1.History, created v1.Time, cmd string) v1.Image {
	t.Helper()
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: layer, History: hist})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = created
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.Cmd = []string{cmd}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// Registry starts go-containerregistry's registry on 127.0.0.1 and returns
// its host:port. It stops when the test ends.
func Registry(t testing.TB, wrap ...func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	for _, w := range wrap {
		h = w(h)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return l.Addr().String()
}

// Push writes img to ref (plain HTTP is fine: the registry is on loopback).
func Push(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// BusyboxRegistry starts a registry holding the busybox image as
// HOST/busybox:latest and returns that reference.
func BusyboxRegistry(t testing.TB) string {
	t.Helper()
	host := Registry(t)
	ref := host + "/busybox:latest"
	Push(t, ref, BusyboxImage(t))
	return ref
}

// Mounts returns the lines of /proc/self/mountinfo that mention dir.
func Mounts(t testing.TB, dir string) []string {
	t.Helper()
	dt, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(dt), "\n") {
		if strings.Contains(l, dir) {
			out = append(out, l)
		}
	}
	return out
}

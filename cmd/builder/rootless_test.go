package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/buildtest"
	"builder/internal/testenv"
)

// rootlessUser is the unprivileged account the rootless tests build as;
// .ci/run creates it, and so does rootlessEnv when it is missing.
const rootlessUser = "builder-rootless"

// rootlessFixture is what a rootless test needs: the user, a directory
// tree the user may use, and a copy of builder the user may execute.
type rootlessFixture struct {
	u        *user.User
	uid, gid uint32
	dir      string // 0755, removed by the test's cleanup
	home     string // the user's writable directory inside dir
	binary   string
}

// rootlessEnv returns the fixture, creating the test user (with a
// subordinate id range) when it is missing. It needs root to switch users.
func rootlessEnv(t *testing.T) *rootlessFixture {
	t.Helper()
	buildtest.RequireRoot(t)
	buildtest.RequireTool(t, "newuidmap")
	buildtest.RequireTool(t, "newgidmap")
	u := ensureRootlessUser(t)
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	// t.TempDir is private to root; the user needs to reach its files.
	dir, err := os.MkdirTemp("", "builder-rootless-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := &rootlessFixture{u: u, uid: uint32(uid), gid: uint32(gid), dir: dir,
		home: filepath.Join(dir, "home"), binary: filepath.Join(dir, "builder")}
	if err := os.Mkdir(f.home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f.home, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.binary, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// ensureRootlessUser looks the test user up, creating it and its
// /etc/subuid and /etc/subgid ranges (through useradd and usermod, which
// lock those files) when missing. Running it again changes nothing.
func ensureRootlessUser(t *testing.T) *user.User {
	t.Helper()
	if _, err := user.Lookup(rootlessUser); err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", rootlessUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v\n%s", rootlessUser, err, out)
		}
	}
	u, err := user.Lookup(rootlessUser)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ file, flag string }{{"/etc/subuid", "--add-subuids"}, {"/etc/subgid", "--add-subgids"}} {
		has, next := subIDState(t, f.file, rootlessUser)
		if has {
			continue
		}
		r := fmt.Sprintf("%d-%d", next, next+65535)
		if out, err := exec.Command("usermod", f.flag, r, rootlessUser).CombinedOutput(); err != nil {
			t.Fatalf("usermod %s %s: %v\n%s", f.flag, r, err, out)
		}
	}
	return u
}

// subIDState reports whether file has a range for name, and the first id
// above every range in it (at least 100000).
func subIDState(t *testing.T, file, name string) (bool, uint64) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	has, next := false, uint64(100000)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		has = has || f[0] == name
		next = max(next, start+count)
	}
	return has, next
}

// command returns builder with args, run as the user with a clean
// environment and SOURCE_DATE_EPOCH set.
func (f *rootlessFixture) command(args ...string) *exec.Cmd {
	cmd := exec.Command(f.binary, args...)
	cmd.Dir = f.home
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + f.home,
		"TMPDIR=" + f.home, "SOURCE_DATE_EPOCH=1700000000"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: f.uid, Gid: f.gid, Groups: []uint32{}}}
	return cmd
}

// run runs builder as the user and returns its output and exit code.
func (f *rootlessFixture) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := f.command(args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// rootlessBase pushes a two-layer base: busybox, then a layer with a file
// to delete, a file owned by 2000:2000 and a character device (which a
// user namespace cannot create).
func rootlessBase(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755, ModTime: mtime},
		{Typeflag: tar.TypeReg, Name: "etc/removeme", Mode: 0o644, Size: 4, ModTime: mtime},
		{Typeflag: tar.TypeDir, Name: "opt/", Mode: 0o755, ModTime: mtime},
		{Typeflag: tar.TypeReg, Name: "opt/owned", Mode: 0o640, Uid: 2000, Gid: 2000, Size: 4, ModTime: mtime},
		{Typeflag: tar.TypeDir, Name: "devs/", Mode: 0o755, ModTime: mtime},
		{Typeflag: tar.TypeChar, Name: "devs/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("data"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	img := buildtest.BusyboxImage(t)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer,
		History: v1.History{CreatedBy: "rootless test layer", Created: v1.Time{Time: mtime.UTC()}}})
	if err != nil {
		t.Fatal(err)
	}
	ref := buildtest.Registry(t) + "/rootless-base:latest"
	buildtest.Push(t, ref, img)
	return ref
}

// writeRootlessCase writes a context directory the user can read.
func (f *rootlessFixture) writeCase(t *testing.T, name, dockerfile string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(f.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files["Dockerfile"] = dockerfile
	for n, data := range files {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		// COPY keeps the mtime, so both builds must see the same one.
		if err := os.Chtimes(p, time.Unix(1700000000, 0), time.Unix(1700000000, 0)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestRootlessBuild builds as an unprivileged user: RUN chown and rm on a
// two-layer base, COPY, a RUN as another user without network (a network
// namespace, /sys and /dev in the sandbox), an OCI archive out. The layers must record the
// in-image owner and a whiteout, keep the base's device node, and the
// image must be the one root builds from the same inputs.
func TestRootlessBuild(t *testing.T) {
	f := rootlessEnv(t)
	base := rootlessBase(t)
	ctx := f.writeCase(t, "ctx", "FROM "+base+"\n"+
		"RUN mkdir /x && echo hi > /x/f && chown -R 1000:1000 /x && rm /etc/removeme && "+
		"test \"$(stat -c %u:%g /opt/owned)\" = 2000:2000\n"+
		"RUN rm -rf /opt && mkdir /opt && touch /opt/new\n"+
		"COPY file /copied\n"+
		"USER 1000:1000\n"+
		"RUN --network=none touch /tmp/byuser && test -d /sys/class && test -c /dev/null\n",
		map[string]string{"file": "from the context\n"})

	userTar := filepath.Join(f.home, "user.tar")
	out, code := f.run(t, "build", "--progress=plain", "-t", "rootless", "-o", "type=oci,dest="+userTar, ctx)
	if code != 0 {
		t.Fatalf("rootless build: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "WARNING: rootless: left 1 device node(s) out") {
		t.Errorf("no warning about the skipped device node:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(f.home, ".local/share/builder/index.json")); err != nil {
		t.Errorf("the store is not in the user's ~/.local/share/builder: %v", err)
	}
	// Linux 5.11 and later mount overlayfs in a user namespace.
	if kind, err := os.ReadFile(filepath.Join(f.home, ".local/share/builder/snapshots/kind")); err != nil ||
		strings.TrimSpace(string(kind)) != "overlay" {
		t.Errorf("rootless snapshotter: %q, %v; want overlay", kind, err)
	}

	rootTar := filepath.Join(t.TempDir(), "root.tar")
	cmd := exec.Command(binary, "--root", t.TempDir(), "build", "--progress=plain", "-o", "type=oci,dest="+rootTar, ctx)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("root build: %v\n%s", err, out)
	}

	userImg, userDigest := readOCIArchive(t, userTar)
	_, rootDigest := readOCIArchive(t, rootTar)
	if userDigest != rootDigest {
		t.Errorf("rootless image %s differs from root's %s", userDigest, rootDigest)
	}
	entries := layerEntries(t, userImg)
	for _, want := range []struct {
		layer    int
		name     string
		uid, gid int
		typ      byte
	}{
		{1, "devs/null", 0, 0, tar.TypeChar},
		{1, "opt/owned", 2000, 2000, tar.TypeReg},
		{2, "x/", 1000, 1000, tar.TypeDir},
		{2, "x/f", 1000, 1000, tar.TypeReg},
		{2, "etc/.wh.removeme", 0, 0, tar.TypeReg},
		{3, "opt/.wh..wh..opq", 0, 0, tar.TypeReg},
		{3, "opt/new", 0, 0, tar.TypeReg},
		{4, "copied", 0, 0, tar.TypeReg},
		{5, "tmp/byuser", 1000, 1000, tar.TypeReg},
	} {
		if want.layer >= len(entries) {
			t.Fatalf("image has %d layers, want more than %d", len(entries), want.layer)
		}
		h, ok := entries[want.layer][want.name]
		if !ok {
			t.Errorf("layer %d has no %s; it has %v", want.layer, want.name, keys(entries[want.layer]))
			continue
		}
		if h.Uid != want.uid || h.Gid != want.gid || h.Typeflag != want.typ {
			t.Errorf("layer %d %s: %d:%d type %q, want %d:%d type %q", want.layer, want.name,
				h.Uid, h.Gid, h.Typeflag, want.uid, want.gid, want.typ)
		}
	}
}

// TestRootlessErrors checks that exit codes pass through the namespace and
// that a user without subordinate ids is told what to do.
func TestRootlessErrors(t *testing.T) {
	f := rootlessEnv(t)
	base := buildtest.BusyboxRegistry(t)
	ctx := f.writeCase(t, "fail", "FROM "+base+"\nRUN exit 3\n", map[string]string{})
	if out, code := f.run(t, "--root", filepath.Join(f.home, "s"), "build", ctx); code != 1 || !strings.Contains(out, "exit code: 3") {
		t.Errorf("failing RUN: exit %d, want 1 with the RUN's code\n%s", code, out)
	}
	if out, code := f.run(t, "build", "--no-such-flag"); code != 2 {
		t.Errorf("usage error: exit %d, want 2\n%s", code, out)
	}

	// nobody has no subordinate ids on any sane machine.
	if has, _ := subIDState(t, "/etc/subuid", "nobody"); has {
		testenv.Skip(t, "nobody has a subordinate id range here")
	}
	nobody := f.command("--root", filepath.Join(f.dir, "nobody"), "images")
	nobody.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	nobody.Dir = "/"
	out, err := nobody.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no range for nobody") || !strings.Contains(string(out), "usermod --add-subuids") {
		t.Errorf("user without subordinate ids: %v\n%s", err, out)
	}
}

// TestRootlessInterrupt sends SIGINT to the user's builder during a long
// RUN: the parent forwards it, and builder stops with 130 leaving no RUN
// process behind.
func TestRootlessInterrupt(t *testing.T) {
	f := rootlessEnv(t)
	base := buildtest.BusyboxRegistry(t)
	marker := "sleep 4343"
	ctx := f.writeCase(t, "sleep", "FROM "+base+"\nRUN echo started; "+marker+"\n", map[string]string{})
	cmd := f.command("--root", filepath.Join(f.home, "s"), "build", "--progress=plain", ctx)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	started, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !once && strings.HasSuffix(sc.Text(), " started") {
				once = true
				close(started)
			}
		}
		if !once {
			close(started)
		}
	}()
	<-started
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	pw.Close()
	<-done
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit: %v, want 130\n%s", err, out.String())
	}
	if procs := processesMatching(t, marker); len(procs) > 0 {
		t.Errorf("RUN processes survived the interrupt: %v", procs)
	}
}

// readOCIArchive unpacks an OCI archive and returns its one image and the
// image's manifest digest.
func readOCIArchive(t *testing.T, path string) (v1.Image, string) {
	t.Helper()
	dir := t.TempDir()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	tr := tar.NewReader(fh)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				var data []byte
				if data, err = io.ReadAll(tr); err == nil {
					err = os.WriteFile(p, data, 0o644)
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("archive holds %d manifests, want 1", len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img, m.Manifests[0].Digest.String()
}

// layerEntries returns the tar headers of each layer of img by name.
func layerEntries(t *testing.T, img v1.Image) []map[string]*tar.Header {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]*tar.Header
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*tar.Header{}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			m[h.Name] = h
		}
		rc.Close()
		out = append(out, m)
	}
	return out
}

func keys(m map[string]*tar.Header) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

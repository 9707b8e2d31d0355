package build

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/buildtest"
	"builder/build/sandbox/cgroup"
	"builder/internal/testenv"
)

// canaryDir makes a host directory holding a file "canary" and returns it
// with a check that nothing in it changed and nothing was added.
func canaryDir(t *testing.T) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "canary"), []byte("untouched\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, func() {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("canary dir holds %q, want only canary", names)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "canary")); err != nil || string(b) != "untouched\n" {
			t.Errorf("canary = %q, %v", b, err)
		}
	}
}

// TestSecurityRun checks from a build that a RUN has no_new_privs and the
// seccomp filter, holds only fds 0-2, cannot mount or make namespaces and
// cannot see a host file: each RUN of the fixture fails the build if not.
func TestSecurityRun(t *testing.T) {
	f := newFixture(t)
	dir, check := canaryDir(t)
	_, log, err := f.build(copyCase(t, "builds/security-run"), func(o *Options) {
		o.BuildArgs["CANARY"] = filepath.Join(dir, "canary")
	})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log)
	}
	check()
}

// TestSecurityWorkdirProcFd builds with WORKDIR /proc/self/fd/N, the path
// of CVE-2024-21626: the build must fail or its RUN must stay inside the
// root, while a host directory is open in the builder.
func TestSecurityWorkdirProcFd(t *testing.T) {
	f := newFixture(t)
	dir, check := canaryDir(t)
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for n := 3; n <= 10; n++ {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			_, log, err := f.build(copyCase(t, "builds/security-workdir"), func(o *Options) {
				o.BuildArgs["N"] = strconv.Itoa(n)
			})
			t.Logf("N=%d: %v", n, err)
			if err == nil && strings.Contains(log, "untouched") {
				t.Errorf("the RUN reached the host:\n%s", log)
			}
		})
	}
	check()
}

// hostileImage returns the busybox image with one more layer made of
// entries.
func hostileImage(t *testing.T, entries func(tw *tar.Writer)) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries(tw)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(buildtest.BusyboxImage(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	ref := buildtest.Registry(t) + "/hostile:latest"
	buildtest.Push(t, ref, img)
	return ref
}

// TestSecurityHostileBase builds FROM images whose layer tries to write
// outside the root: ".." entries, an absolute symlink written through, and
// a hard link to a host file later written to by a RUN. The build may fail
// or contain them; the host canary directory must stay as it was.
func TestSecurityHostileBase(t *testing.T) {
	f := newFixture(t)
	dir, check := canaryDir(t)
	up := strings.Repeat("../", 20)
	reg := func(tw *tar.Writer, name, data string) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))})
		tw.Write([]byte(data))
	}
	cases := []struct {
		name    string
		entries func(tw *tar.Writer)
	}{
		{"dotdot", func(tw *tar.Writer) {
			reg(tw, up+strings.TrimPrefix(dir, "/")+"/pwned", "pwned\n")
			reg(tw, up+strings.TrimPrefix(dir, "/")+"/canary", "pwned\n")
		}},
		{"absolute", func(tw *tar.Writer) {
			reg(tw, dir+"/pwned", "pwned\n")
		}},
		{"symlink write-through", func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "escape", Linkname: dir, Mode: 0o777})
			reg(tw, "escape/pwned", "pwned\n")
			reg(tw, "escape/canary", "pwned\n")
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: up + strings.TrimPrefix(dir, "/"), Mode: 0o777})
			reg(tw, "abs/pwned", "pwned\n")
		}},
		{"hardlink outside", func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "hl", Linkname: up + strings.TrimPrefix(dir, "/") + "/canary"})
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "hl2", Linkname: dir + "/canary"})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ref := hostileImage(t, tc.entries)
			_, log, err := f.build(copyCase(t, "builds/security-hostile-base"), func(o *Options) {
				o.BuildArgs["BASE"] = ref
			})
			t.Logf("build: %v", err)
			_ = log
			check()
		})
	}
	// The store is still usable.
	f.mustBuild(copyCase(t, "builds/rebuild"))
}

// TestSecurityContext checks that COPY keeps a context symlink to a host
// file as a link and never reads its host target: a symlink source or a
// symlinked directory resolves inside the context (and is missing there),
// and a source above the context is refused.
func TestSecurityContext(t *testing.T) {
	f := newFixture(t)
	if _, log, err := f.build(copyCase(t, "builds/security-context")); err != nil {
		t.Fatalf("symlink to /etc/shadow: %v\n%s", err, log)
	}
	for _, c := range []string{"builds/security-context-link", "builds/security-context-dirlink", "builds/security-copy-parent"} {
		t.Run(filepath.Base(c), func(t *testing.T) {
			res, log, err := f.build(copyCase(t, c))
			if err == nil {
				img := unpack(t, res.Image)
				b, _ := os.ReadFile(filepath.Join(img.rootfs, "x"))
				t.Fatalf("build succeeded, /x = %q\n%s", b, log)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestIsolationChroot builds a multi-stage Dockerfile with RUN, COPY,
// COPY --from and WORKDIR in forced chroot isolation on the naive
// snapshotter: the progress says so, the RUNs keep their hardening (each
// fails the build otherwise), and the image holds what the steps wrote.
func TestIsolationChroot(t *testing.T) {
	f := newFixtureWith(t, "naive")
	dir, check := canaryDir(t)
	res, log := f.mustBuild(copyCase(t, "builds/isolation-chroot"), func(o *Options) {
		o.Isolation = IsolationChroot
		o.BuildArgs["CANARY"] = filepath.Join(dir, "canary")
	})
	check()
	if !strings.Contains(log, "WARNING: isolation: chroot (chosen with --isolation=chroot): RUN steps are not a security boundary") {
		t.Errorf("progress does not name the isolation:\n%s", log)
	}
	u := unpack(t, res.Image)
	if got := readFile(t, u.rootfs, "app/all.txt"); got != "hello\nnested\ntool\n" {
		t.Errorf("all.txt = %q", got)
	}
	if got := readFile(t, u.rootfs, "app/where.txt"); got != "/app\n" {
		t.Errorf("where.txt = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(u.rootfs, "app/nested.txt")); err == nil {
		t.Error("app/nested.txt was not removed")
	}
	for _, p := range []string{"proc", "dev", "sys"} {
		if ents, err := os.ReadDir(filepath.Join(u.rootfs, p)); err == nil && len(ents) > 0 {
			t.Errorf("/%s in the image holds %d entries: a mount leaked into the layer", p, len(ents))
		}
	}
}

// TestIsolationChrootNeedsNaive checks that chroot isolation refuses an
// overlay store rather than mounting.
func TestIsolationChrootNeedsNaive(t *testing.T) {
	f := newFixtureWith(t, "overlay")
	_, _, err := f.build(copyCase(t, "builds/isolation-chroot"), func(o *Options) { o.Isolation = IsolationChroot })
	if err == nil || !strings.Contains(err.Error(), "naive snapshotter") {
		t.Fatalf("build = %v, want a naive snapshotter error", err)
	}
	_, _, err = f.build(copyCase(t, "builds/isolation-chroot"), func(o *Options) { o.Isolation = "jail" })
	if err == nil || !strings.Contains(err.Error(), "auto, namespaces or chroot") {
		t.Fatalf("build = %v, want an isolation error", err)
	}
}

// TestBuildLimits runs RUNs under --pids-limit and --memory: a fork loop
// fails cleanly, an allocation over the limit fails with exit code 137 and
// an error that says out of memory, and no per-run cgroup is left.
func TestBuildLimits(t *testing.T) {
	f := newFixture(t)
	sup := cgroup.Probe()
	if !sup.Supports(cgroup.Limits{Memory: 1, Pids: 1}) {
		testenv.Skip(t, "cgroups not usable: %s", sup.Reason)
	}
	tests := []struct {
		name   string
		limits cgroup.Limits
		script string
		code   int
		want   string
	}{
		{"pids", cgroup.Limits{Pids: 20}, "for i in $(seq 1 100); do sleep 303.5 & done; echo survived", 2, "can't fork"},
		{"memory", cgroup.Limits{Memory: 32 << 20}, "dd if=/dev/zero of=/dev/null bs=64M count=1", 137, "out of memory"},
		{"within", cgroup.Limits{Memory: 64 << 20, CPUs: 1, Pids: 64}, "echo fine", 0, "fine"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, log, err := f.build(copyCase(t, "builds/limits"), func(o *Options) {
				o.Limits = tc.limits
				o.NoCache = true
				o.BuildArgs["SCRIPT"] = tc.script
			})
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("build: %v\n%s", err, log)
				}
			} else {
				if got := ExitCode(err); got != tc.code {
					t.Fatalf("exit code %d (%v), want %d\n%s", got, err, tc.code, log)
				}
				if strings.Contains(log, "survived") {
					t.Errorf("the fork loop survived:\n%s", log)
				}
			}
			if !strings.Contains(log+fmt.Sprint(err), tc.want) {
				t.Errorf("neither log nor error say %q: %v\n%s", tc.want, err, log)
			}
			if left, err := sup.RunCgroupsOf(os.Getpid()); err != nil || len(left) > 0 {
				t.Errorf("cgroups left: %v %v", left, err)
			}
		})
	}
}

// TestBuildLimitsUnsupportedWarns is covered where cgroups are missing:
// limitFlags names the flags the warning lists.
func TestLimitFlags(t *testing.T) {
	if got := limitFlags(cgroup.Limits{Memory: 1, Pids: 2}); got != "--memory, --pids-limit" {
		t.Errorf("limitFlags = %q", got)
	}
}

func TestParseMemory(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"32m", 32 << 20}, {"1g", 1 << 30}, {"1.5G", 3 << 29}, {"7340032", 7 << 20}, {"8192k", 8 << 20}, {"64mb", 64 << 20},
		{"512MiB", 512 << 20}, {" 1t ", 1 << 40}, {"0", -1}, {"3q", -1},
		{"", -1}, {"x", -1}, {"-5m", -1}, {"1k", -1},
	} {
		got, err := ParseMemory(tc.in)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("ParseMemory(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMemory(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
}

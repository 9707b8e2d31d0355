package build

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// TestCopyOnePassSameLayers builds cases with COPY in one pass and with
// every COPY copied into a snapshot, each in its own store on the same
// base, and compares the layers of their COPY and ADD steps: they must be
// the same blobs. A layer that also differs between two builds without
// the one pass is not compared. Both builds clamp times to an epoch after
// the contexts' mtimes (2020), so that directories a step makes at build
// time (ADD's extraction directory, a WORKDIR) do not differ by the second
// the builds ran in, while the source times one pass writes stay as they
// are. The cases are onePassContext's and, unless -short, every
// conformance case that builds alone; enough COPY steps must have taken
// the one pass for the comparison to mean something.
func TestCopyOnePassSameLayers(t *testing.T) {
	var onePass atomic.Int64
	epoch := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
	compare := func(t *testing.T, prepare func(t *testing.T) string, caseOpts func(f *fixture, dir string) []func(*Options)) {
		opts := func(f *fixture, dir string) []func(*Options) {
			return append(caseOpts(f, dir), func(o *Options) { o.Epoch = &epoch })
		}
		a := newFixture(t)
		dirA := prepare(t)
		resA, logA := a.mustBuild(dirA, opts(a, dirA)...)
		onePass.Add(a.b.onePassCopies.Load())
		old := func() (*Result, string) {
			f := newFixture(t)
			f.base = a.base
			f.b.noOnePass = true
			dir := prepare(t)
			res, log := f.mustBuild(dir, opts(f, dir)...)
			if n := f.b.onePassCopies.Load(); n != 0 {
				t.Fatalf("%d COPY steps took the one pass with it turned off", n)
			}
			return res, log
		}
		resB, logB := old()
		la, lb := copyLayers(t, resA), copyLayers(t, resB)
		var resC *Result
		for i := range la {
			if i >= len(lb) || la[i] == lb[i] {
				continue
			}
			if resC == nil {
				resC, _ = old()
			}
			if lc := copyLayers(t, resC); i < len(lc) && lc[i] == lb[i] {
				t.Errorf("layer %d (%s) differs: %s (blob %s) in one pass, %s (blob %s) through a snapshot\none pass:\n%s\nsnapshot:\n%s",
					i, la[i].createdBy, la[i].diffID, la[i].digest, lb[i].diffID, lb[i].digest, logA, logB)
			}
		}
		if len(la) != len(lb) {
			t.Errorf("%d COPY layers in one pass, %d through a snapshot", len(la), len(lb))
		}
	}
	t.Run("hostile-context", func(t *testing.T) {
		compare(t, onePassContext, func(*fixture, string) []func(*Options) { return nil })
	})
	if _, err := os.Stat(conformanceDir); err == nil && !testing.Short() {
		t.Run("conformance", func(t *testing.T) {
			for _, c := range conformanceCases(t) {
				if c.Base != "" || len(c.Env) > 0 || len(c.Contexts) > 0 || c.Expect.Error != "" {
					continue // built on another case's image, needs the process env or named contexts, or fails by design
				}
				dt, err := os.ReadFile(filepath.Join(conformanceDir, c.Name, c.Dockerfile))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(dt), "COPY") && !strings.Contains(string(dt), "ADD") {
					continue
				}
				t.Run(c.Name, func(t *testing.T) {
					t.Parallel()
					compare(t, func(t *testing.T) string { return c.prepare(t) }, func(f *fixture, dir string) []func(*Options) {
						o := c.options(f, dir)
						return []func(*Options){func(x *Options) {
							x.BuildArgs, x.Target, x.Network, x.Platform, x.Secrets, x.Allow = o.BuildArgs, o.Target, o.Network, o.Platform, o.Secrets, o.Allow
							x.Dockerfile = o.Dockerfile
						}}
					})
				})
			}
		})
	}
	min := int64(5)
	if !testing.Short() {
		min = 40
	}
	t.Logf("%d COPY steps took the one pass", onePass.Load())
	if n := onePass.Load(); n < min {
		t.Errorf("%d COPY steps took the one pass, want at least %d", n, min)
	}
}

type copyLayer struct {
	createdBy      string
	diffID, digest v1.Hash
}

// TestCopyOnePassReusesMembers checks that a COPY in one pass, rebuilt
// after a one-file change, reuses the unchanged gzip members of its last
// layer as the copy into a snapshot does, and gives the same blob as a
// cold build of the changed context.
func TestCopyOnePassReusesMembers(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	ctx := filepath.Join(dir, "context")
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		p := filepath.Join(ctx, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d", i))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		buf := make([]byte, 200<<10)
		for k := range buf {
			buf[k] = byte(rnd.Uint32())
		}
		must(t, os.WriteFile(p, buf, 0o644))
	}
	must(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("ARG BASE\nFROM $BASE\nCOPY . /app\n"), 0o644))
	f.mustBuild(dir)
	must(t, os.WriteFile(filepath.Join(ctx, "d1", "f05"), []byte("changed"), 0o644))
	res, log := f.mustBuild(dir)
	if !strings.Contains(log, "reused from the last build of this step") {
		t.Errorf("no gzip member reused:\n%s", log)
	}
	if n := f.b.onePassCopies.Load(); n != 2 {
		t.Errorf("%d COPY steps in one pass, want 2", n)
	}
	cold := newFixture(t)
	cold.base = f.base
	resCold, _ := cold.mustBuild(dir)
	if a, b := copyLayers(t, res), copyLayers(t, resCold); len(a) != 1 || len(b) != 1 || a[0] != b[0] {
		t.Errorf("rebuilt layer %v, cold %v", a, b)
	}
}

// TestCopyOnePassSameErrors checks that a COPY the one pass leaves to
// the copy into a snapshot fails there with that path's error: a file
// named like a whiteout, and a source symlink that leads out of the
// context.
func TestCopyOnePassSameErrors(t *testing.T) {
	for name, c := range map[string]struct{ link, file, want string }{
		"whiteout name": {file: "wh/.wh.x", want: "a file named like a whiteout cannot be stored in a layer"},
		"link out":      {link: "../../../etc", want: "not found"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, noOnePass := range []bool{false, true} {
				f := newFixture(t)
				f.b.noOnePass = noOnePass
				dir := t.TempDir()
				ctx := filepath.Join(dir, "context")
				must(t, os.MkdirAll(filepath.Join(ctx, "wh"), 0o755))
				src := "wh"
				if c.file != "" {
					must(t, os.WriteFile(filepath.Join(ctx, c.file), []byte("x"), 0o644))
				}
				if c.link != "" {
					must(t, os.Symlink(c.link, filepath.Join(ctx, "link")))
					src = "link/passwd"
				}
				must(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("ARG BASE\nFROM $BASE\nCOPY "+src+" /dst\n"), 0o644))
				_, log, err := f.build(dir)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("noOnePass=%v: error %v, want one containing %q\n%s", noOnePass, err, c.want, log)
				}
				if n := f.b.onePassCopies.Load(); n != 0 {
					t.Errorf("noOnePass=%v: %d layers written in one pass", noOnePass, n)
				}
			}
		})
	}
}

// copyLayers lists the layers of res's image made by COPY and ADD steps,
// in order.
func copyLayers(t *testing.T, res *Result) []copyLayer {
	t.Helper()
	img := res.Image
	if img == nil {
		if len(res.Images) == 0 {
			return nil
		}
		img = res.Images[0].Image
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []copyLayer
	layer := 0
	for _, h := range cf.History {
		if h.EmptyLayer {
			continue
		}
		if layer >= len(cf.RootFS.DiffIDs) {
			t.Fatalf("history has more layers than rootfs (%d)", len(cf.RootFS.DiffIDs))
		}
		if strings.HasPrefix(h.CreatedBy, "COPY ") || strings.HasPrefix(h.CreatedBy, "ADD ") {
			d, err := ls[layer].Digest()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, copyLayer{createdBy: h.CreatedBy, diffID: cf.RootFS.DiffIDs[layer], digest: d})
		}
		layer++
	}
	return out
}

// onePassContext makes a case whose COPY steps meet what the one pass must
// get right or leave to the copy into a snapshot: symlinks pointing out of
// the context, hard links, a fifo, an xattr, a whiteout-like name, setuid
// and 0700 modes, --chmod, --chown, --exclude, an existing destination,
// and steps after them that need the files (a RUN, COPY --from).
func onePassContext(t *testing.T) string {
	dir := t.TempDir()
	ctx := filepath.Join(dir, "context")
	files := map[string]string{
		"app/a.txt": "alpha\n", "app/sub/b.txt": "bravo\n", "app/run.sh": "#!/bin/sh\necho hi\n",
		"app/c.bin": "\x00\x01", "weird/plain": "p", "attr/x": "x", "one.txt": "one\n",
	}
	for p, s := range files {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(ctx, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(ctx, p), []byte(s), 0o644))
	}
	must(t, unix.Chmod(filepath.Join(ctx, "app/run.sh"), 0o4755))
	must(t, os.Chmod(filepath.Join(ctx, "app/sub"), 0o700))
	must(t, os.Link(filepath.Join(ctx, "app/a.txt"), filepath.Join(ctx, "app/sub/a-link")))
	must(t, os.Symlink("../../../../../etc/passwd", filepath.Join(ctx, "app/out")))
	must(t, os.Symlink("/", filepath.Join(ctx, "app/root")))
	must(t, mkfifo(filepath.Join(ctx, "weird/fifo")))
	must(t, setxattr(filepath.Join(ctx, "attr/x"), "user.k", "v"))
	dockerfile := `ARG BASE
FROM $BASE AS src
COPY app /app
RUN test -u /app/run.sh && cat /app/a.txt > /out
FROM $BASE
COPY . /all
COPY app /app
COPY --chmod=0700 --chown=1:2 app /owned/
COPY --chmod=u+x,g-r app /sym
COPY --exclude=*.bin app /noexe
COPY one.txt /single
COPY app /bin/
COPY weird /weird
COPY attr /attr
RUN cat /app/a.txt /single /app/sub/a-link > /out && test -u /app/run.sh && test -L /app/out && test -p /weird/fifo
COPY --from=src /app /fromsrc
COPY --from=src /out /out2
`
	must(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644))
	// Every build gets the same times, so that builds can be compared.
	stamp := conformanceMtime.Format("200601021504.05")
	if out, err := exec.Command("find", ctx, "-exec", "touch", "-h", "-t", stamp, "{}", "+").CombinedOutput(); err != nil {
		t.Fatalf("touch context: %v: %s", err, out)
	}
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mkfifo(p string) error { return unix.Mkfifo(p, 0o644) }

func setxattr(p, k, v string) error { return unix.Lsetxattr(p, k, []byte(v), 0) }

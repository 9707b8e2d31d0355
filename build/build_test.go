package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/buildtest"
	"builder/build/progress"
	"builder/build/registry"
	"builder/build/sandbox"
	"builder/export"
	"builder/snapshot"
)

func TestMain(m *testing.M) {
	if sandbox.Reexec() {
		return
	}
	os.Exit(m.Run())
}

// fixture is a store, a builder on it and a registry serving the busybox
// base image.
type fixture struct {
	t    testing.TB
	root string
	b    *Builder
	base string
	sn   string
	rc   *registry.Client // the builder's registry client; nil for the default
}

func newFixture(t testing.TB) *fixture { return newFixtureWith(t, "") }

// newFixtureWith makes a fixture whose store uses the named snapshotter.
func newFixtureWith(t testing.TB, snapshotter string) *fixture {
	t.Helper()
	buildtest.RequireRoot(t)
	// A root New creates: t.TempDir() is 0755, which New would tighten
	// with a warning in every progress output.
	root := filepath.Join(t.TempDir(), "store")
	f := &fixture{t: t, root: root, base: buildtest.BusyboxRegistry(t), sn: snapshotter}
	f.b = f.open()
	t.Cleanup(func() {
		if m := buildtest.Mounts(t, f.root); len(m) > 0 {
			t.Errorf("mounts left behind under the store:\n%s", strings.Join(m, "\n"))
		}
	})
	return f
}

func (f *fixture) open() *Builder {
	b, err := New(Config{Root: f.root, Snapshotter: f.sn, Registry: f.rc})
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// copyCase copies testdata/<dir> into a temporary directory, so a test can
// change the context, and returns the copy.
func copyCase(t testing.TB, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "case")
	if out, err := exec.Command("cp", "-a", filepath.Join("..", "testdata", dir), dst).CombinedOutput(); err != nil {
		t.Fatalf("copy case: %v: %s", err, out)
	}
	buildtest.NormalizeModes(t, dst) // the checkout's umask is not the fixture's
	if err := os.MkdirAll(filepath.Join(dst, "context"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// build builds the case in dir (a copy made by copyCase) and returns the
// result and the progress log.
func (f *fixture) build(dir string, mod ...func(*Options)) (*Result, string, error) {
	var log bytes.Buffer
	o := Options{ContextDir: filepath.Join(dir, "context"), Dockerfile: filepath.Join(dir, "Dockerfile"),
		BuildArgs: map[string]string{"BASE": f.base}, Progress: progress.New(&log, progress.Plain)}
	for _, m := range mod {
		m(&o)
	}
	res, err := buildFile(context.Background(), f.b, o)
	return res, log.String(), err
}

// buildFile reads and parses the Dockerfile o names and builds it, as the
// CLI does.
func buildFile(ctx context.Context, b *Builder, o Options) (*Result, error) {
	g, err := ReadDockerfile(o.DockerfilePath())
	if err != nil {
		return nil, err
	}
	return b.Build(ctx, g, o)
}

func (f *fixture) mustBuild(dir string, mod ...func(*Options)) (*Result, string) {
	f.t.Helper()
	res, log, err := f.build(dir, mod...)
	if err != nil {
		f.t.Fatalf("build: %v\nlog:\n%s", err, log)
	}
	return res, log
}

// unpacked is an image written as an OCI archive and unpacked with umoci.
type unpacked struct {
	archive string
	rootfs  string
	config  v1.ConfigFile
}

// unpack exports img as an OCI archive and unpacks it with umoci, an
// independent implementation.
func unpack(t testing.TB, img v1.Image) unpacked {
	t.Helper()
	buildtest.RequireTool(t, "umoci")
	dir := t.TempDir()
	archive := filepath.Join(dir, "image.tar")
	w, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := export.WriteOCIArchive(context.Background(), w, img, "test"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	layout := filepath.Join(dir, "layout")
	os.Mkdir(layout, 0o755)
	if out, err := exec.Command("tar", "-xf", archive, "-C", layout).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v: %s", err, out)
	}
	bundle := filepath.Join(dir, "bundle")
	if out, err := exec.Command("umoci", "unpack", "--image", layout+":test", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v: %s", err, out)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return unpacked{archive: archive, rootfs: filepath.Join(bundle, "rootfs"), config: *cf}
}

func readFile(t testing.TB, root, p string) string {
	t.Helper()
	dt, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatalf("read %s from the image: %v", p, err)
	}
	return string(dt)
}

func TestBuildVerticalSlice(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/slice")
	res, log := f.mustBuild(dir, func(o *Options) { o.Tags = []string{"app"} })

	u := unpack(t, res.Image)
	if got := readFile(t, u.rootfs, "hello"); got != "hello\n" {
		t.Errorf("/hello = %q", got)
	}
	if got := readFile(t, u.rootfs, "etc/passwd"); !strings.Contains(got, "svc:x:1001:1001") {
		t.Errorf("/etc/passwd lacks svc: %q", got)
	}
	st, err := os.Stat(filepath.Join(u.rootfs, "usr/local/bin/app.sh"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("app.sh: %v, mode %v", err, st)
	}
	if st, err := os.Stat(filepath.Join(u.rootfs, "srv")); err != nil || !st.IsDir() {
		t.Errorf("WORKDIR /srv not created: %v", err)
	}
	for _, stub := range []string{"etc/hosts", "etc/resolv.conf", "proc", "dev", "sys"} {
		if _, err := os.Lstat(filepath.Join(u.rootfs, stub)); err == nil {
			t.Errorf("sandbox stub /%s was committed into the image", stub)
		}
	}
	c := u.config.Config
	if c.User != "svc" || c.WorkingDir != "/srv" || strings.Join(c.Entrypoint, " ") != "/usr/local/bin/app.sh" || c.Cmd != nil {
		t.Errorf("config: user %q workdir %q entrypoint %q cmd %q", c.User, c.WorkingDir, c.Entrypoint, c.Cmd)
	}
	if !contains(c.Env, "GREETING=hi") {
		t.Errorf("Env %q lacks GREETING=hi", c.Env)
	}
	if n := len(u.config.RootFS.DiffIDs); n != 4 { // busybox + RUN + COPY + WORKDIR
		t.Errorf("%d layers, want 4", n)
	}
	var created []string
	for _, h := range u.config.History {
		created = append(created, h.CreatedBy)
	}
	wantHistory := []string{"buildtest busybox", "RUN /bin/sh -c echo hello", "COPY app.sh /usr/local/bin/app.sh",
		"WORKDIR /srv", "ENV GREETING=hi", "USER svc", `ENTRYPOINT ["/usr/local/bin/app.sh"]`}
	if len(created) != len(wantHistory) {
		t.Fatalf("history %q", created)
	}
	for i, w := range wantHistory {
		if !strings.HasPrefix(created[i], w) {
			t.Errorf("history[%d] = %q, want prefix %q", i, created[i], w)
		}
	}
	if !strings.Contains(log, "[stage-0 2/7] RUN echo hello") {
		t.Errorf("log lacks step header:\n%s", log)
	}

	// skopeo, a second independent reader, agrees on the layers.
	buildtest.RequireTool(t, "skopeo")
	out, err := exec.Command("skopeo", "inspect", "oci-archive:"+u.archive).Output()
	if err != nil {
		t.Fatalf("skopeo inspect: %v", err)
	}
	var insp struct{ Layers []string }
	if err := json.Unmarshal(out, &insp); err != nil || len(insp.Layers) != 4 {
		t.Errorf("skopeo inspect: %v %s", err, out)
	}

	// The image runs: its entrypoint, as svc in /srv, with GREETING.
	var stdout bytes.Buffer
	err = sandbox.Run(context.Background(), sandbox.Spec{
		Root: []snapshot.Mount{{Type: "bind", Source: u.rootfs, Options: []string{"rbind"}}},
		Args: append(c.Entrypoint, c.Cmd...), Env: c.Env, Cwd: c.WorkingDir, User: c.User,
		Network: "none", Stdout: &stdout, Stderr: &stdout})
	if err != nil || stdout.String() != "hi from svc in /srv\n" {
		t.Errorf("running the image: %v, output %q", err, stdout.String())
	}

	// The tag is in the local store.
	if _, err := f.b.Index().Lookup("docker.io/library/app:latest"); err != nil {
		t.Errorf("lookup app: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var cachedRE = regexp.MustCompile(`(?m)^#\d+ CACHED$`)

func TestRebuild(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/rebuild")
	first, _ := f.mustBuild(dir)
	first1 := unpack(t, first.Image)

	// Same inputs, a new Builder on the same store: nothing runs, same digest.
	f.b = f.open()
	second, log := f.mustBuild(dir)
	if second.ManifestDigest != first.ManifestDigest {
		t.Errorf("rebuild digest %s, first %s", second.ManifestDigest, first.ManifestDigest)
	}
	if n := len(cachedRE.FindAllString(log, -1)); n != 3 {
		t.Errorf("%d steps CACHED, want 3:\n%s", n, log)
	}

	// A changed COPY source re-runs the COPY and what follows, not before.
	if err := os.WriteFile(filepath.Join(dir, "context/input.txt"), []byte("two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third, log := f.mustBuild(dir)
	if n := len(cachedRE.FindAllString(log, -1)); n != 1 {
		t.Errorf("%d steps CACHED after the change, want 1:\n%s", n, log)
	}
	u := unpack(t, third.Image)
	if got := readFile(t, u.rootfs, "second"); got != "two\n" {
		t.Errorf("/second = %q", got)
	}
	if a, b := readFile(t, u.rootfs, "first-ran"), readFile(t, first1.rootfs, "first-ran"); a != b {
		t.Errorf("the first RUN ran again: %q vs %q", a, b)
	}
	if a, b := readFile(t, u.rootfs, "second-ran"), readFile(t, first1.rootfs, "second-ran"); a == b {
		t.Errorf("the RUN after the COPY did not run again")
	}

	// --no-cache runs everything.
	_, log = f.mustBuild(dir, func(o *Options) { o.NoCache = true })
	if n := len(cachedRE.FindAllString(log, -1)); n != 0 {
		t.Errorf("--no-cache: %d steps CACHED", n)
	}
}

func TestDeletedFileAbsent(t *testing.T) {
	for _, sn := range []string{"overlay", "naive"} {
		t.Run(sn, func(t *testing.T) {
			f := newFixtureWith(t, sn)
			res, _ := f.mustBuild(copyCase(t, "builds/deleted"))
			u := unpack(t, res.Image)
			for _, p := range []string{"gone.txt", "d/old"} {
				if _, err := os.Lstat(filepath.Join(u.rootfs, p)); err == nil {
					t.Errorf("/%s is still in the image", p)
				}
			}
			if got := readFile(t, u.rootfs, "d/new"); got != "n\n" {
				t.Errorf("/d/new = %q", got)
			}
			if got := readFile(t, u.rootfs, "kept.txt"); got != "keep\n" {
				t.Errorf("/kept.txt = %q", got)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		dir    string
		want   string // regexp the error must match
		output string // a line the StepError's Output must hold
	}{
		{"syntax", `^Dockerfile:2: .*(chwon|unknown flag)`, ""},
		{"unknown", `^Dockerfile:2: .*(?i)unknown instruction: FROBNICATE`, ""},
		{"missing-copy", `^Dockerfile:4: COPY missing-source.txt /x: .*missing-source.txt`, ""},
		{"failing-run", `^Dockerfile:3: RUN echo about to fail && exit 3: exit code: 3$`, "about to fail"},
		{"unreachable", `(?s)^Dockerfile:1: FROM 127.0.0.1:1/nothing-here:latest: .*127.0.0.1:1/nothing-here`, ""},
		{"stage-typo", `(?s)^Dockerfile:6: COPY --from=127.0.0.1:1/biulder /out /out: .*\(did you mean builder\?\)$`, ""},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			_, log, err := f.build(copyCase(t, "invalid/"+tc.dir))
			if err == nil {
				t.Fatalf("build succeeded:\n%s", log)
			}
			if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Errorf("error %q does not match %q", err, tc.want)
			}
			var se *StepError
			if tc.output != "" && !(errors.As(err, &se) && slices.Contains(se.Output, tc.output)) {
				t.Errorf("error %v: not a StepError whose output holds %q", err, tc.output)
			}
			if m := buildtest.Mounts(t, f.root); len(m) > 0 {
				t.Errorf("mounts left after a failed build: %q", m)
			}
		})
	}
	// The store is still usable.
	f.b = f.open()
	f.mustBuild(copyCase(t, "builds/rebuild"))
}

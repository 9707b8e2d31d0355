package build

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/build/namedctx"
	"builder/export"
)

// namedContexts parses --build-context specs as the CLI does.
func namedContexts(t *testing.T, specs ...string) map[string]namedctx.Context {
	t.Helper()
	out := map[string]namedctx.Context{}
	for _, s := range specs {
		c, err := namedctx.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out[c.Key] = c
	}
	return out
}

// TestBuildContexts builds with every --build-context form builder
// resolves itself: a directory (with its own .dockerignore and a symlink
// out of it), an image in a registry on loopback, an OCI layout that
// builder exported and an http URL (Git contexts: TestRunMountSSH), used by FROM, COPY --from and RUN --mount from=; then
// replaces a stage by an image context and checks that the stage's
// instructions did not run.
func TestBuildContexts(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/named")
	dirctx := filepath.Join(dir, "dirctx")
	if err := os.Symlink("/etc", filepath.Join(dirctx, "out")); err != nil {
		t.Fatal(err)
	}
	image := func(what string) *Result {
		res, _ := f.mustBuild(dir, func(o *Options) {
			o.Dockerfile = filepath.Join(dir, "image.Dockerfile")
			o.BuildArgs["WHAT"] = what
		})
		return res
	}
	// An image in the registry, and an OCI layout written by builder.
	imgRef := strings.TrimSuffix(f.base, "busybox:latest") + "img:latest"
	buildtest.Push(t, imgRef, image("image").Image)
	layoutDir := filepath.Join(t.TempDir(), "layout")
	archive := filepath.Join(t.TempDir(), "layout.tar")
	w, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := export.WriteOCIArchive(context.Background(), w, image("layout").Image, "v1"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	os.Mkdir(layoutDir, 0o755)
	if out, err := exec.Command("tar", "-xf", archive, "-C", layoutDir).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v: %s", err, out)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(buildtest.LoopbackServer(t, "from-url\n")) + "/file.txt"
	specs := []string{"dirctx=" + dirctx, "imgctx=docker-image://" + imgRef, "layoutctx=oci-layout://" + layoutDir + ":v1", "urlctx=" + url}

	res, _ := f.mustBuild(dir, func(o *Options) { o.NamedContexts = namedContexts(t, specs...) })
	u := unpack(t, res.Image)
	want := map[string]string{
		"dir/hello":      "hello-dir\n",
		"from-image":     "from-image\n",
		"from-layout":    "from-layout\n",
		"from-dir-stage": "hello-dir\n",
		"from-dir-mount": "hello-dir\n",
		"from-stage":     "from-stage\n",
		"from-url":       "from-url\n",
	}
	for p, w := range want {
		if got := readFile(t, u.rootfs, p); got != w {
			t.Errorf("/%s = %q, want %q", p, got, w)
		}
	}
	if _, err := os.Lstat(filepath.Join(u.rootfs, "dir/secret.txt")); !os.IsNotExist(err) {
		t.Errorf("the context's .dockerignore'd file was copied (%v)", err)
	}
	if l, err := os.Readlink(filepath.Join(u.rootfs, "dir/out")); err != nil || l != "/etc" {
		t.Errorf("/dir/out = %q, %v; want the symlink itself", l, err)
	}

	// A context named like a stage replaces the stage.
	res, log := f.mustBuild(dir, func(o *Options) {
		o.NamedContexts = namedContexts(t, append(specs, "base=docker-image://"+imgRef)...)
	})
	u = unpack(t, res.Image)
	if got := readFile(t, u.rootfs, "from-stage"); got != "from-image\n" {
		t.Errorf("/from-stage = %q with the stage replaced, want the image's", got)
	}
	if strings.Contains(log, "echo from-stage") {
		t.Errorf("the replaced stage's RUN ran:\n%s", log)
	}

	// Paths in a directory context resolve inside it.
	for _, df := range []string{"hostile-copy.Dockerfile", "hostile-mount.Dockerfile"} {
		_, log, err := f.build(dir, func(o *Options) {
			o.Dockerfile = filepath.Join(dir, df)
			o.NamedContexts = namedContexts(t, specs...)
		})
		if err == nil || !regexp.MustCompile(`^`+regexp.QuoteMeta(df)+`:4: .*(no such file|not found)`).MatchString(err.Error()) {
			t.Errorf("%s: error %v, want not found at line 4\n%s", df, err, log)
		}
	}
}

package build

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/export"
	"builder/export/imagediff"
)

// reproEpoch is the SOURCE_DATE_EPOCH of the reproducibility tests: older
// than every file the tests write, newer than the base image's files.
var reproEpoch = time.Unix(1700000500, 0).UTC()

func withEpoch(o *Options) { t := reproEpoch; o.Epoch = &t }

// shuffledCopy copies the case dir (Dockerfile and context) to a new
// directory, creating the context's files in reverse order and giving them
// mtimes other than the original's, all after reproEpoch.
func shuffledCopy(t *testing.T, dir string, mtime time.Time) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "case")
	var paths []string
	src := filepath.Join(dir, "context")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(paths)
	mustCopy := func(from, to string) {
		st, err := os.Lstat(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if st.IsDir() {
			if err := os.MkdirAll(to, st.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
			return
		}
		dt, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, dt, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(to, st.Mode().Perm()); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	mustCopy(filepath.Join(dir, "Dockerfile"), filepath.Join(dst, "Dockerfile"))
	for _, rel := range paths {
		mustCopy(filepath.Join(src, rel), filepath.Join(dst, "context", rel))
	}
	// Files first, then directories deepest first, so that setting a file's
	// time does not move its directory's.
	for i, rel := range paths {
		p := filepath.Join(dst, "context", rel)
		mt := mtime.Add(time.Duration(i*7) * time.Second)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// newLayers returns the layers of img above the base image's nBase.
func newLayers(t *testing.T, img v1.Image, nBase int) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) <= nBase {
		t.Fatalf("%d layers, base has %d", len(ls), nBase)
	}
	return ls[nBase:]
}

// checkCanonicalLayer reads a layer tar and reports any entry that breaks
// the canonical form or has an mtime after epoch. It adds each entry's
// mtime to mtimes.
func checkCanonicalLayer(t *testing.T, l v1.Layer, epoch time.Time, mtimes map[string]time.Time) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var prev []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.ModTime.After(epoch) {
			t.Errorf("%s: mtime %s after the epoch %s", h.Name, h.ModTime.UTC(), epoch)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: uname/gname %q/%q", h.Name, h.Uname, h.Gname)
		}
		if !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: atime/ctime recorded", h.Name)
		}
		if h.Typeflag != tar.TypeChar && h.Typeflag != tar.TypeBlock && (h.Devmajor != 0 || h.Devminor != 0) {
			t.Errorf("%s: device numbers on a non-device", h.Name)
		}
		if h.Format == tar.FormatPAX && len(h.PAXRecords) == 0 {
			t.Errorf("%s: PAX header without records", h.Name)
		}
		if h.Format == tar.FormatGNU {
			t.Errorf("%s: GNU tar header", h.Name)
		}
		cur := strings.Split(strings.TrimSuffix(h.Name, "/"), "/")
		if prev != nil && slices.Compare(prev, cur) >= 0 {
			t.Errorf("entries out of order: %q before %q", strings.Join(prev, "/"), h.Name)
		}
		prev = cur
		mtimes[h.Name] = h.ModTime
	}
}

func TestReproducibleWithEpoch(t *testing.T) {
	f1 := newFixture(t)
	dir1 := copyCase(t, "builds/repro")
	// A file older than the epoch keeps its mtime.
	old := time.Unix(1600000000, 0)
	setOld := func(dir string) {
		if err := os.Chtimes(filepath.Join(dir, "context/a.txt"), old, old); err != nil {
			t.Fatal(err)
		}
	}
	setOld(dir1)
	prev := runtime.GOMAXPROCS(1)
	r1, _ := f1.mustBuild(dir1, withEpoch)
	runtime.GOMAXPROCS(prev)

	f2 := newFixture(t)
	dir2 := shuffledCopy(t, dir1, time.Now().Add(72*time.Hour))
	setOld(dir2)
	r2, _ := f2.mustBuild(dir2, withEpoch)
	if r1.ManifestDigest != r2.ManifestDigest {
		rep, err := imagediff.Compare(context.Background(), r1.Image, r2.Image)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		rep.Write(&buf)
		t.Fatalf("digests differ: %s (GOMAXPROCS=1) and %s (GOMAXPROCS=%d, other context and store)\n%s",
			r1.ManifestDigest, r2.ManifestDigest, runtime.GOMAXPROCS(0), buf.String())
	}

	// The build's layers are canonical and clamped; the base is untouched.
	const nBase = 1
	base, err := (&job{b: f1.b}).resolveImage(context.Background(), f1.base, v1.Platform{})
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := r1.Image.Layers()
	if d, _ := ls[0].Digest(); d != base.layers[0].Digest {
		t.Errorf("base layer rewritten: %s, want %s", d, base.layers[0].Digest)
	}
	mtimes := map[string]time.Time{}
	for _, l := range newLayers(t, r1.Image, nBase) {
		checkCanonicalLayer(t, l, reproEpoch, mtimes)
	}
	for name, want := range map[string]time.Time{"app/src/a.txt": old, "app/src/z.txt": reproEpoch, "app/built.txt": reproEpoch, "app/": reproEpoch} {
		if got, ok := mtimes[name]; !ok || !got.Equal(want) {
			t.Errorf("%s: mtime %s (present %v), want %s", name, got.UTC(), ok, want.UTC())
		}
	}

	// created and every new history entry are the epoch.
	cf, err := r1.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Time.Equal(reproEpoch) {
		t.Errorf("created %s, want %s", cf.Created.Time, reproEpoch)
	}
	for i, h := range cf.History[len(base.config.History):] {
		if !h.Created.Time.Equal(reproEpoch) {
			t.Errorf("history[%d] %q created %s, want the epoch", i, h.CreatedBy, h.Created.Time)
		}
	}

	// The config is canonical: nothing host-specific, keys in a stable order.
	raw, err := r1.Image.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	for _, bad := range []string{`"Hostname"`, `"hostname"`, `"docker_version"`, `"container"`, `"builder"`, host} {
		if bytes.Contains(raw, []byte(bad)) {
			t.Errorf("config holds %s:\n%s", bad, raw)
		}
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}

	// COPY of the context: contents and modes kept, owner 0:0.
	u := unpack(t, r1.Image)
	if got := readFile(t, u.rootfs, "app/src/sub/deep/c.sh"); got != "#!/bin/sh\necho c\n" {
		t.Errorf("c.sh = %q", got)
	}
	st, err := os.Stat(filepath.Join(u.rootfs, "app/src/sub/deep/c.sh"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("c.sh mode: %v %v", st, err)
	}
	if got := readFile(t, u.rootfs, "app/gen/gen-link.txt"); got != "generated\n" {
		t.Errorf("COPY --from: gen-link.txt = %q", got)
	}
}

// nextFileSecond returns once the files the kernel creates are stamped
// with a later whole second than the ones created before the call, so that
// the files two builds' RUN steps write differ in mtime. It waits for that
// event, not a guessed time: it stamps a probe file and sleeps until the
// second after its mtime, up to a bound.
func nextFileSecond(t *testing.T) {
	t.Helper()
	probe := filepath.Join(t.TempDir(), "clock")
	stamp := func() time.Time {
		if err := os.WriteFile(probe, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(probe)
		if err != nil {
			t.Fatal(err)
		}
		return st.ModTime()
	}
	first := stamp().Unix()
	for range 100 {
		now := stamp()
		if now.Unix() > first {
			return
		}
		time.Sleep(max(time.Until(now.Truncate(time.Second).Add(time.Second)), 0) + 5*time.Millisecond)
	}
	t.Fatalf("file mtimes stayed in second %d", first)
}

// buildPair builds the case twice, in two fresh stores, a second apart and
// from context copies with different mtimes, and compares the images.
func buildPair(t *testing.T, dir string, mod ...func(*Options)) (*Result, *Result, *imagediff.Report) {
	t.Helper()
	f1 := newFixture(t)
	r1, _ := f1.mustBuild(dir, mod...)
	nextFileSecond(t) // mtimes have whole seconds
	f2 := newFixture(t)
	r2, _ := f2.mustBuild(shuffledCopy(t, dir, time.Now().Add(-time.Hour)), mod...)

	// Compare A as an OCI archive against B by its name in the store.
	archive := filepath.Join(t.TempDir(), "a.tar")
	w, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := export.WriteOCIArchive(context.Background(), w, r1.Image, "a"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	ctx := context.Background()
	a, err := imagediff.Open(ctx, "oci-archive:"+archive, imagediff.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := f2.b.tag("docker.io/library/repro-b:latest", r2.ManifestDigest); err != nil {
		t.Fatal(err)
	}
	b, err := imagediff.Open(ctx, "repro-b", imagediff.OpenOptions{Store: f2.b.Store(), Index: f2.b.Index()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := imagediff.Compare(ctx, a.Image, b.Image)
	if err != nil {
		t.Fatal(err)
	}
	if rep.A != r1.ManifestDigest || rep.B != r2.ManifestDigest {
		t.Fatalf("compared %s and %s, built %s and %s", rep.A, rep.B, r1.ManifestDigest, r2.ManifestDigest)
	}
	return r1, r2, rep
}

func TestWithoutEpochOnlyTimestampsDiffer(t *testing.T) {
	dir := copyCase(t, "builds/repro")
	r1, r2, rep := buildPair(t, dir)
	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("builder diff:\n%s", out.String())
	if r1.ManifestDigest == r2.ManifestDigest {
		t.Fatalf("two builds a second apart without SOURCE_DATE_EPOCH have one digest")
	}
	if !rep.OnlyTimestamps() || !strings.Contains(out.String(), "images differ only in timestamps") {
		t.Errorf("diff is not only timestamps:\n%s", out.String())
	}
	var mtimes int
	for _, l := range rep.Layers {
		for _, f := range l.Files {
			if f.Field != "mtime" {
				t.Errorf("file change %+v", f)
			}
			if f.Path == "/app/built.txt" {
				mtimes++
			}
		}
	}
	if mtimes != 1 {
		t.Errorf("the RUN-written /app/built.txt is not named:\n%s", out.String())
	}
	for _, c := range rep.Config {
		if c.Path != "created" && !strings.HasSuffix(c.Path, "].created") {
			t.Errorf("config change %+v", c)
		}
	}
	if len(rep.Config) == 0 {
		t.Errorf("created did not change:\n%s", out.String())
	}
}

func TestRunWritingDateDiffers(t *testing.T) {
	dir := copyCase(t, "builds/repro-date")
	r1, r2, rep := buildPair(t, dir, withEpoch)
	var out bytes.Buffer
	rep.Write(&out)
	t.Logf("builder diff:\n%s", out.String())
	if r1.ManifestDigest == r2.ManifestDigest {
		t.Fatalf("a RUN writing the date gave one digest twice")
	}
	if len(rep.Config) != 0 {
		t.Errorf("config differs, though the epoch fixes every time:\n%s", out.String())
	}
	if len(rep.Layers) != 1 {
		t.Fatalf("%d layers differ, want 1:\n%s", len(rep.Layers), out.String())
	}
	var named bool
	for _, f := range rep.Layers[0].Files {
		if f.Path != "/stamp" {
			t.Errorf("change to %s, only /stamp should differ: %+v", f.Path, f)
		}
		if f.Field == "content" {
			named = true
		}
	}
	if !named || !strings.Contains(out.String(), "/stamp: content sha256:") || rep.OnlyTimestamps() {
		t.Errorf("diff does not name /stamp's content:\n%s", out.String())
	}
}

package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"builder/build/cache"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/progress"
	"builder/build/store"
)

// childEnv makes the test binary, re-executed, run one build and exit: the
// store tests need builds in separate processes (concurrency, SIGKILL).
const childEnv = "BUILDER_TEST_CHILD_BUILD"

// childSpec is the build a child process runs.
type childSpec struct {
	Root, Dir string
	Args      map[string]string
	Tag       string
}

func init() {
	v := os.Getenv(childEnv)
	if v == "" {
		return
	}
	// Sandbox processes re-exec this binary too: they must not see it.
	os.Unsetenv(childEnv)
	var s childSpec
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		os.Exit(2)
	}
	b, err := New(Config{Root: s.Root})
	if err == nil {
		o := Options{ContextDir: filepath.Join(s.Dir, "context"), Dockerfile: filepath.Join(s.Dir, "Dockerfile"),
			BuildArgs: s.Args, Progress: progress.New(os.Stderr, progress.Plain)}
		if s.Tag != "" {
			o.Tags = []string{s.Tag}
		}
		_, err = buildFile(context.Background(), b, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child build:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startChild starts a build of the case dir on f's store in a new process.
func (f *fixture) startChild(dir, tag string, args map[string]string) (*exec.Cmd, *childLog) {
	f.t.Helper()
	all := map[string]string{"BASE": f.base}
	for k, v := range args {
		all[k] = v
	}
	spec, _ := json.Marshal(childSpec{Root: f.root, Dir: dir, Args: all, Tag: tag})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	// A plain file, not a pipe, for the child's output: nothing for
	// os/exec to copy, and the child's stdio are ordinary blocking files.
	log, err := os.CreateTemp(f.t.TempDir(), "child-*.log")
	if err != nil {
		f.t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	return cmd, &childLog{path: log.Name()}
}

// childLog is a child build's output file; String reads it.
type childLog struct{ path string }

func (c *childLog) String() string {
	dt, _ := os.ReadFile(c.path)
	return string(dt)
}

// checkStore fails t for every problem Check finds in the store at root.
func checkStore(t *testing.T, root string) {
	t.Helper()
	b, err := New(Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	probs, err := b.maint.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("check: %s", p)
	}
}

// storeFiles lists the non-hidden files in dir below the store root.
func storeFiles(t *testing.T, root, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, dir))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestCheck(t *testing.T) {
	layerOf := func(t *testing.T, res *Result, i int) v1.Hash {
		ls, err := res.Image.Layers()
		if err != nil {
			t.Fatal(err)
		}
		d, err := ls[i].Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, f *fixture, res *Result) v1.Hash // returns what must be reported
		want   string
	}{
		{name: "clean", damage: func(*testing.T, *fixture, *Result) v1.Hash { return v1.Hash{} }},
		{name: "corrupt layer blob", want: "content hashes to", damage: func(t *testing.T, f *fixture, res *Result) v1.Hash {
			d := layerOf(t, res, 1)
			p := f.b.store.Path(d)
			dt, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			dt[len(dt)/2] ^= 0xff
			if err := os.WriteFile(p, dt, 0o644); err != nil {
				t.Fatal(err)
			}
			return d
		}},
		{name: "missing config", want: "is missing", damage: func(t *testing.T, f *fixture, res *Result) v1.Hash {
			if err := f.b.store.Delete(res.ConfigDigest); err != nil {
				t.Fatal(err)
			}
			return res.ConfigDigest
		}},
		{name: "record names missing blob", want: "is missing", damage: func(t *testing.T, f *fixture, res *Result) v1.Hash {
			d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
			if err := f.b.cache.Put(cache.Record{Key: cache.Key(strings.Repeat("cd", 32)), DiffID: d, Digest: d, Size: 1}); err != nil {
				t.Fatal(err)
			}
			return d
		}},
		{name: "damaged record", want: "read cache record", damage: func(t *testing.T, f *fixture, res *Result) v1.Hash {
			k := strings.Repeat("ef", 32)
			if err := os.WriteFile(filepath.Join(f.root, "cache", k+".json"), []byte(`{"digest": tru`), 0o600); err != nil {
				t.Fatal(err)
			}
			return v1.Hash{Algorithm: "sha256", Hex: k}
		}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			f := newFixture(t)
			res, _ := f.mustBuild(copyCase(t, "builds/slice"), func(o *Options) { o.Tags = []string{"app"} })
			subject := c.damage(t, f, res)
			probs, err := f.b.maint.Check(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				for _, p := range probs {
					t.Errorf("unexpected problem: %s", p)
				}
				return
			}
			found := false
			for _, p := range probs {
				if strings.Contains(p.String(), c.want) && strings.Contains(p.String(), subject.Hex) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem naming %s with %q; got %v", subject.Hex, c.want, probs)
			}
		})
	}
}

// TestConcurrentBuildProcesses runs two builds of one Dockerfile in two
// processes on one store at once: both succeed, the store checks clean,
// nothing is left in ingest/, and a third build is served from the cache.
func TestConcurrentBuildProcesses(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/store")
	type child struct {
		cmd *exec.Cmd
		out *childLog
	}
	var kids []child
	for _, tag := range []string{"one", "two", "three"} {
		cmd, out := f.startChild(dir, tag, nil)
		kids = append(kids, child{cmd, out})
	}
	for i, k := range kids {
		if err := k.cmd.Wait(); err != nil {
			t.Fatalf("build %d: %v\n%s", i, err, k.out)
		}
	}
	checkStore(t, f.root)
	if left := storeFiles(t, f.root, "ingest"); len(left) > 0 {
		t.Errorf("ingest files left: %v", left)
	}
	if left := storeFiles(t, f.root, "snapshots/active"); len(left) > 0 {
		t.Errorf("active snapshots left: %v", left)
	}
	for _, tag := range []string{"one", "two", "three"} {
		if _, err := f.b.index.Lookup(tag); err != nil {
			t.Errorf("tag %s: %v", tag, err)
		}
	}
	res, log := f.mustBuild(dir)
	if res.Cached != res.Steps || !allRunCached(log) {
		t.Errorf("rebuild after concurrent builds: %d of %d steps cached\n%s", res.Cached, res.Steps, log)
	}
}

// allRunCached reports whether every RUN step in a progress log ended CACHED.
func allRunCached(log string) bool {
	runs := map[string]bool{}
	for _, l := range strings.Split(log, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && strings.HasPrefix(f[0], "#") && strings.HasPrefix(f[1], "[") && strings.Contains(l, "] RUN ") {
			runs[f[0]] = true
		}
		if len(f) == 2 && f[1] == "CACHED" {
			delete(runs, f[0])
		}
	}
	return len(runs) == 0
}

// TestKilledBuilds kills builds with SIGKILL at random points, then checks
// that the next build succeeds and the store is sound: every blob hashes
// to its name, no temporary files or active snapshots outlive a new open,
// and no mount is left.
func TestKilledBuilds(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/store")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	iterations := 8
	if testing.Short() {
		iterations = 3
	}
	for i := range iterations {
		// A new flavor each time, so every build has RUN steps to do.
		cmd, out := f.startChild(dir, "", map[string]string{"FLAVOR": fmt.Sprintf("k%d", i)})
		delay := time.Duration(rng.IntN(500)) * time.Millisecond
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			t.Logf("iteration %d finished before the kill after %v: %v", i, delay, err)
			if err != nil {
				t.Fatalf("build %d: %v\n%s", i, err, out)
			}
		case <-time.After(delay):
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			t.Logf("iteration %d killed after %v", i, delay)
		}
	}
	// Rebuild killed flavors (meeting their half-done work) and a new one.
	for _, flavor := range []string{"k0", "k1", fmt.Sprintf("k%d", iterations-1), "fresh"} {
		f.b = f.open() // opening cleans up after the dead
		f.mustBuild(dir, func(o *Options) { o.BuildArgs["FLAVOR"] = flavor })
	}
	checkStore(t, f.root)
	if left := storeFiles(t, f.root, "ingest"); len(left) > 0 {
		t.Errorf("ingest files left: %v", left)
	}
	if left := storeFiles(t, f.root, "snapshots/active"); len(left) > 0 {
		t.Errorf("active snapshots left: %v", left)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), f.root) {
		t.Errorf("mounts under the store remain:\n%s", mi)
	}
}

// TestPrune builds a tagged image and an untagged one on one store, then
// checks what each kind of collection keeps, and that the store checks
// clean after it.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	type state struct {
		f          *fixture
		dir        string
		kept, gone *Result
	}
	layers := func(t *testing.T, r *Result) []v1.Hash {
		ls, err := r.Image.Layers()
		if err != nil {
			t.Fatal(err)
		}
		var out []v1.Hash
		for _, l := range ls {
			d, _ := l.Digest()
			out = append(out, d)
		}
		return out
	}
	records := func(t *testing.T, s *state) int {
		n := 0
		s.f.b.cache.Walk(func(cache.Entry) error { n++; return nil })
		return n
	}
	mount := func(t *testing.T, s *state, name string, age time.Duration) string {
		p := filepath.Join(s.f.root, store.CacheMountsDir, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "data"), bytes.Repeat([]byte("x"), 4096), 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-age)
		os.Chtimes(p, old, old)
		return p
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	cases := []struct {
		name string
		run  func(t *testing.T, s *state)
	}{
		{"default keeps cache, drops untagged image", func(t *testing.T, s *state) {
			m := mount(t, s, "m1", 0)
			before := records(t, s)
			rep, err := s.f.b.maint.Prune(ctx, store.PruneOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if s.f.b.store.Has(s.gone.ManifestDigest) || s.f.b.store.Has(s.gone.ConfigDigest) {
				t.Error("the untagged image's manifest or config survived")
			}
			if rep.Records != 0 || records(t, s) != before || !exists(m) {
				t.Errorf("default prune dropped cache: %+v", rep)
			}
			_, log := s.f.mustBuild(s.dir, func(o *Options) { o.BuildArgs["V"] = "gone" })
			if !allRunCached(log) {
				t.Errorf("rebuild of the pruned image is not cached:\n%s", log)
			}
		}},
		{"all drops cache, keeps tagged image", func(t *testing.T, s *state) {
			m := mount(t, s, "m1", 0)
			rep, err := s.f.b.maint.Prune(ctx, store.PruneOptions{All: true})
			if err != nil {
				t.Fatal(err)
			}
			if n := records(t, s); n != 0 || exists(m) {
				t.Errorf("after prune --all: %d records, cache mount there %v", n, exists(m))
			}
			for _, d := range layers(t, s.kept) {
				if !s.f.b.store.Has(d) {
					t.Errorf("layer %s of the tagged image was removed", d)
				}
			}
			if rep.Blobs == 0 || rep.Snapshots == 0 {
				t.Errorf("prune --all removed too little: %+v", rep)
			}
			_, log := s.f.mustBuild(s.dir, func(o *Options) { o.BuildArgs["V"] = "kept" })
			if allRunCached(log) {
				t.Errorf("rebuild after prune --all was served from the cache:\n%s", log)
			}
		}},
		{"until drops only old cache", func(t *testing.T, s *state) {
			oldM, newM := mount(t, s, "old", 48*time.Hour), mount(t, s, "new", 0)
			var oldKeys []cache.Key
			old := time.Now().Add(-48 * time.Hour)
			s.f.b.cache.Walk(func(e cache.Entry) error {
				if len(oldKeys) < 2 {
					oldKeys = append(oldKeys, e.Key)
					os.Chtimes(filepath.Join(s.f.b.cache.Dir(), string(e.Key)+".json"), old, old)
				}
				return nil
			})
			before := records(t, s)
			rep, err := s.f.b.maint.Prune(ctx, store.PruneOptions{Until: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Records != len(oldKeys) || records(t, s) != before-len(oldKeys) {
				t.Errorf("until removed %d records, want %d", rep.Records, len(oldKeys))
			}
			if exists(oldM) || !exists(newM) {
				t.Errorf("until: old cache mount there %v, new one there %v", exists(oldM), exists(newM))
			}
		}},
		{"keep-storage evicts down to the tagged image", func(t *testing.T, s *state) {
			m := mount(t, s, "m1", 0)
			rep, err := s.f.b.maint.Prune(ctx, store.PruneOptions{KeepStorage: 1})
			if err != nil {
				t.Fatal(err)
			}
			if n := records(t, s); n != 0 || exists(m) || rep.Records == 0 {
				t.Errorf("keep-storage 1: %d records left, mount there %v, report %+v", n, exists(m), rep)
			}
			u, err := s.f.b.maint.DiskUsage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if u.CacheBlobs != 0 || u.UnreferencedBlobs != 0 || u.ImageBlobs == 0 {
				t.Errorf("usage after keep-storage 1: %+v", u)
			}
		}},
		{"generous keep-storage removes no cache", func(t *testing.T, s *state) {
			before := records(t, s)
			if _, err := s.f.b.maint.Prune(ctx, store.PruneOptions{KeepStorage: 1 << 40}); err != nil {
				t.Fatal(err)
			}
			if n := records(t, s); n != before {
				t.Errorf("keep-storage 1TiB dropped records: %d → %d", before, n)
			}
		}},
		{"rmi removes the image, keeps its cache", func(t *testing.T, s *state) {
			if _, err := s.f.b.maint.RemoveImage(ctx, "kept"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.f.b.index.Lookup("kept"); err == nil {
				t.Error("tag survived rmi")
			}
			if s.f.b.store.Has(s.kept.ManifestDigest) {
				t.Error("manifest survived rmi")
			}
			_, log := s.f.mustBuild(s.dir, func(o *Options) { o.BuildArgs["V"] = "kept" })
			if !allRunCached(log) {
				t.Errorf("rebuild after rmi is not cached:\n%s", log)
			}
		}},
		{"prune waits for builds", func(t *testing.T, s *state) {
			unlock, err := s.f.b.maint.LockShared(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer unlock()
			tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			if _, err := s.f.b.maint.Prune(tctx, store.PruneOptions{All: true}); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("prune under a build's lock: %v, want it to wait", err)
			}
			if records(t, s) == 0 {
				t.Error("prune ran while a build held the store")
			}
		}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			s := &state{f: newFixture(t), dir: copyCase(t, "builds/explain")}
			s.kept, _ = s.f.mustBuild(s.dir, func(o *Options) { o.BuildArgs["V"] = "kept"; o.Tags = []string{"kept"} })
			s.gone, _ = s.f.mustBuild(s.dir, func(o *Options) { o.BuildArgs["V"] = "gone" })
			c.run(t, s)
			checkStore(t, s.f.root)
		})
	}
}

// TestAutoGC checks the policy applied after every build: over the limit
// it evicts cache records and cache mounts but keeps tagged images and the
// build's own result; under it, or switched off, it removes nothing; and
// it never waits for a store another build holds.
func TestAutoGC(t *testing.T) {
	ctx := context.Background()
	records := func(b *Builder) int {
		n := 0
		b.cache.Walk(func(cache.Entry) error { n++; return nil })
		return n
	}
	mount := func(t *testing.T, root string) string {
		p := filepath.Join(root, store.CacheMountsDir, "m1")
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.MkdirAll(p, 0o755))
		must(os.WriteFile(filepath.Join(p, "data"), bytes.Repeat([]byte("x"), 64<<10), 0o644))
		old := time.Now().Add(-time.Hour)
		must(os.Chtimes(p, old, old))
		return p
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	cases := []struct {
		name  string
		keep  int64
		check func(t *testing.T, f *fixture, b *Builder, kept, res *Result, log string, before int, m string)
	}{
		{"over the limit evicts cache, keeps images", 1, func(t *testing.T, f *fixture, b *Builder, kept, res *Result, log string, before int, m string) {
			if n := records(b); n != 0 || exists(m) {
				t.Errorf("after automatic GC over the limit: %d records, cache mount there %v", n, exists(m))
			}
			if !strings.Contains(log, "automatic GC: store was") {
				t.Errorf("the build log does not report the collection:\n%s", log)
			}
			for _, r := range []*Result{kept, res} {
				ls, err := r.Image.Layers()
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range ls {
					d, _ := l.Digest()
					if !b.store.Has(d) {
						t.Errorf("layer %s of image %s was collected", d, r.ManifestDigest)
					}
				}
				if !b.store.Has(r.ManifestDigest) || !b.store.Has(r.ConfigDigest) {
					t.Errorf("manifest or config of %s was collected", r.ManifestDigest)
				}
			}
		}},
		{"under the limit removes nothing", 1 << 40, func(t *testing.T, f *fixture, b *Builder, kept, res *Result, log string, before int, m string) {
			if n := records(b); n < before || !exists(m) {
				t.Errorf("under the limit: records %d → %d, cache mount there %v", before, n, exists(m))
			}
			st, err := os.Stat(filepath.Join(f.root, store.StateFile))
			if err != nil {
				t.Fatalf("no GC state after a measured build: %v", err)
			}
			// A second build within the recheck period only sums blobs.
			f.b = b
			f.mustBuild(copyCase(t, "builds/explain"), func(o *Options) { o.BuildArgs["V"] = "third" })
			st2, err := os.Stat(filepath.Join(f.root, store.StateFile))
			if err != nil || !st2.ModTime().Equal(st.ModTime()) {
				t.Errorf("the store was measured again right after a measurement (%v)", err)
			}
		}},
		{"disabled removes nothing", -1, func(t *testing.T, f *fixture, b *Builder, kept, res *Result, log string, before int, m string) {
			if n := records(b); n < before || !exists(m) {
				t.Errorf("with GC off: records %d → %d, cache mount there %v", before, n, exists(m))
			}
			if _, err := os.Stat(filepath.Join(f.root, store.StateFile)); err == nil {
				t.Error("GC ran though it is off")
			}
		}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			f := newFixture(t)
			dir := copyCase(t, "builds/explain")
			f.b, _ = New(Config{Root: f.root, GCKeepStorage: -1})
			kept, _ := f.mustBuild(dir, func(o *Options) { o.BuildArgs["V"] = "kept"; o.Tags = []string{"kept"} })
			m := mount(t, f.root)
			before := records(f.b)
			b, err := New(Config{Root: f.root, GCKeepStorage: c.keep, GCGrace: -1})
			if err != nil {
				t.Fatal(err)
			}
			f.b = b
			res, log := f.mustBuild(dir, func(o *Options) { o.BuildArgs["V"] = "untagged" })
			c.check(t, f, b, kept, res, log, before, m)
			checkStore(t, f.root)
		})
	}

	// Another process's build has just finished and not yet exported its
	// untagged result: with the default grace period, automatic GC over the
	// limit leaves that result and its fresh cache alone.
	t.Run("spares_a_fresh_result_of_another_build", func(t *testing.T) {
		f := newFixture(t)
		dir := copyCase(t, "builds/explain")
		f.b, _ = New(Config{Root: f.root, GCKeepStorage: -1})
		fresh, _ := f.mustBuild(dir, func(o *Options) { o.BuildArgs["V"] = "fresh" })
		b, err := New(Config{Root: f.root, GCKeepStorage: 1}) // default grace
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.maint.AutoGC(ctx); err != nil {
			t.Fatal(err)
		}
		if !b.store.Has(fresh.ManifestDigest) || !b.store.Has(fresh.ConfigDigest) || records(b) == 0 {
			t.Errorf("automatic GC removed another build's fresh result (manifest kept %v) or cache (%d records)",
				b.store.Has(fresh.ManifestDigest), records(b))
		}
		// An explicit prune has no grace period.
		if _, err := b.maint.Prune(ctx, store.PruneOptions{KeepStorage: 1}); err != nil {
			t.Fatal(err)
		}
		if b.store.Has(fresh.ManifestDigest) {
			t.Error("prune kept an untagged manifest")
		}
	})

	t.Run("skips_a_busy_store", func(t *testing.T) {
		f := newFixture(t)
		dir := copyCase(t, "builds/explain")
		b, err := New(Config{Root: f.root, GCKeepStorage: 1, GCGrace: -1})
		if err != nil {
			t.Fatal(err)
		}
		other := f.open()
		unlock, err := other.maint.LockShared(ctx) // another build in progress
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		f.b = b
		f.mustBuild(dir) // would never return if GC waited for the lock
		if records(b) == 0 {
			t.Error("GC ran while another build held the store")
		}
		rep, err := b.maint.AutoGC(ctx)
		if err != nil || rep.Ran {
			t.Errorf("AutoGC on a busy store: ran %v, err %v", rep.Ran, err)
		}
		unlock()
		rep, err = b.maint.AutoGC(ctx)
		if err != nil || !rep.Ran || records(b) != 0 {
			t.Errorf("AutoGC on a free store: ran %v, %d records left, err %v", rep.Ran, records(b), err)
		}
	})
}

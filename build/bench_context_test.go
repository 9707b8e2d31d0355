package build

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"builder/build/buildtest"
	"builder/build/progress"
)

// stepCachedRE finds "#N CACHED" lines; stepLineRE the "#N [..] INSTR"
// line that names step N.
var (
	stepCachedRE = regexp.MustCompile(`(?m)^(#\d+) CACHED$`)
	stepLineRE   = regexp.MustCompile(`(?m)^(#\d+) \[[^\]]*\] (\S+ .*)$`)
)

// cachedSteps returns the instructions of the steps a plain progress log
// shows as CACHED, and those it shows running.
func cachedSteps(log string) (cached, ran []string) {
	isCached := map[string]bool{}
	for _, m := range stepCachedRE.FindAllStringSubmatch(log, -1) {
		isCached[m[1]] = true
	}
	seen := map[string]bool{}
	for _, m := range stepLineRE.FindAllStringSubmatch(log, -1) {
		if seen[m[1]] || strings.HasPrefix(m[2], "FROM ") {
			continue
		}
		seen[m[1]] = true
		if isCached[m[1]] {
			cached = append(cached, m[2])
		} else {
			ran = append(ran, m[2])
		}
	}
	return cached, ran
}

// TestContextChangeRerunsCopy changes one context file in place, keeping
// its size and its mtime to the nanosecond, and checks that the rebuild
// takes the RUN before the COPY from the cache and runs the COPY and the
// step after it, with the new content in the image. Without the change a
// rebuild runs nothing.
func TestContextChangeRerunsCopy(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/context-change")
	first, _ := f.mustBuild(dir)
	f.b = f.open()
	second, log := f.mustBuild(dir)
	if _, ran := cachedSteps(log); len(ran) != 0 || second.ManifestDigest != first.ManifestDigest {
		t.Fatalf("unchanged rebuild ran %q (digest %s, first %s)\n%s", ran, second.ManifestDigest, first.ManifestDigest, log)
	}

	p := filepath.Join(dir, "context", "src", "lib", "b.txt")
	var before unix.Stat_t
	if err := unix.Lstat(p, &before); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("BRAVO\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.UtimesNano(p, []unix.Timespec{before.Atim, before.Mtim}); err != nil {
		t.Fatal(err)
	}
	f.b = f.open()
	third, log := f.mustBuild(dir)
	cached, ran := cachedSteps(log)
	if len(cached) != 1 || !strings.HasPrefix(cached[0], "RUN ") || !strings.Contains(cached[0], "first-ran") {
		t.Errorf("cached after the change: %q, want only the first RUN\n%s", cached, log)
	}
	if len(ran) != 2 || !strings.HasPrefix(ran[0], "COPY ") || !strings.Contains(ran[1], "second-ran") {
		t.Errorf("ran after the change: %q, want the COPY and the RUN after it\n%s", ran, log)
	}
	u := unpack(t, third.Image)
	if got := readFile(t, u.rootfs, "app/src/lib/b.txt"); got != "BRAVO\n" {
		t.Errorf("/app/src/lib/b.txt = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(u.rootfs, "app/node_modules/dep")); err == nil {
		t.Error("the ignored node_modules/dep is in the image")
	}
	if got := readFile(t, u.rootfs, "app/node_modules/keep.js"); got != "keep\n" {
		t.Errorf("/app/node_modules/keep.js = %q", got)
	}
}

// genContext writes files regular files of size bytes of pseudo-random
// (incompressible) content below dir/sub, 100 to a directory.
func genContext(b *testing.B, dir, sub string, files, size int, seed uint64) {
	b.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	buf := make([]byte, size)
	for i := 0; i < files; i++ {
		d := filepath.Join(dir, sub, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d.bin", i)), buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// contextCase is a generated build case: a Dockerfile that copies the
// whole context, next to (not in) the context directory.
type contextCase struct {
	dockerfile, context string
}

func newContextCase(b *testing.B) contextCase {
	b.Helper()
	dir := b.TempDir()
	c := contextCase{dockerfile: filepath.Join(dir, "Dockerfile"), context: filepath.Join(dir, "context")}
	if err := os.MkdirAll(c.context, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(c.dockerfile, []byte("ARG BASE\nFROM $BASE\nCOPY . /app\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	return c
}

// cachedRebuilds builds c once on a fresh store (the cold build, whose time
// it returns), then rounds times with a newly opened Builder each, as
// separate processes would, and returns the median of those.
func cachedRebuilds(b *testing.B, base string, c contextCase, rounds int) (cold, cached time.Duration) {
	b.Helper()
	root := b.TempDir()
	ctx := context.Background()
	o := Options{ContextDir: c.context, Dockerfile: c.dockerfile, BuildArgs: map[string]string{"BASE": base},
		Progress: progress.New(nil, progress.Plain)}
	build := func() *Result {
		bl, err := New(Config{Root: root})
		if err != nil {
			b.Fatal(err)
		}
		res, err := buildFile(ctx, bl, o)
		if err != nil {
			b.Fatal(err)
		}
		return res
	}
	start := time.Now()
	build()
	cold = time.Since(start)
	var ds []time.Duration
	for range rounds {
		start := time.Now()
		res := build()
		ds = append(ds, time.Since(start))
		if res.Cached != res.Steps {
			b.Fatalf("rebuild: %d of %d steps cached", res.Cached, res.Steps)
		}
	}
	return cold, median(ds)
}

// BenchmarkContextCopy reports a fully cached rebuild of `COPY . /app`
// over a 20,000-file, 200 MB context (the context hashing the cache key
// needs is served by the stat cache; target 300 ms), and the cold build
// that hashes, copies and compresses it all. Medians of 5 rebuilds.
func BenchmarkContextCopy(b *testing.B) {
	buildtest.RequireRoot(b)
	base := buildtest.BusyboxRegistry(b)
	c := newContextCase(b)
	genContext(b, c.context, "src", 20000, 10<<10, 1)
	b.ResetTimer()
	var colds, cacheds []time.Duration
	for i := 0; i < b.N; i++ {
		cold, cached := cachedRebuilds(b, base, c, 5)
		colds, cacheds = append(colds, cold), append(cacheds, cached)
	}
	b.ReportMetric(float64(median(colds).Milliseconds()), "cold-ms")
	b.ReportMetric(float64(median(cacheds).Microseconds())/1000, "cached-rebuild-ms")
}

// BenchmarkIgnoredContext reports a fully cached rebuild over a
// 100,000-file context of which 95,000 files lie in a .dockerignored
// node_modules (with a "!" pattern that keeps one file of it, so the walk
// must look inside but not descend further), next to the same rebuild
// over a context of only the 5,000 included files. The two should cost
// about the same. Medians of 5 rebuilds.
func BenchmarkIgnoredContext(b *testing.B) {
	buildtest.RequireRoot(b)
	base := buildtest.BusyboxRegistry(b)
	big, small := newContextCase(b), newContextCase(b)
	for _, c := range []contextCase{big, small} {
		genContext(b, c.context, "src", 5000, 4<<10, 2)
		if err := os.WriteFile(filepath.Join(c.context, ".dockerignore"), []byte("node_modules\n!node_modules/keep.js\n"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	genContext(b, big.context, "node_modules", 95000, 256, 3)
	if err := os.WriteFile(filepath.Join(big.context, "node_modules", "keep.js"), []byte("keep\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var bigs, smalls []time.Duration
	for i := 0; i < b.N; i++ {
		_, d := cachedRebuilds(b, base, big, 5)
		bigs = append(bigs, d)
		_, d = cachedRebuilds(b, base, small, 5)
		smalls = append(smalls, d)
	}
	b.ReportMetric(float64(median(bigs).Microseconds())/1000, "100k-ignored-rebuild-ms")
	b.ReportMetric(float64(median(smalls).Microseconds())/1000, "included-only-rebuild-ms")
}

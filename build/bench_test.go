package build

import (
	"context"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"builder/build/buildtest"
)

// BenchmarkBuild20Runs builds testdata/bench/runs20 (busybox and 20 RUN
// steps that each write a small file) and reports, as medians over b.N
// rounds: the cold build, the cost of one RUN step (sandbox, snapshot,
// diff, compression, commit), and a fully cached rebuild by a freshly
// opened Builder, as a new process would do it.
func BenchmarkBuild20Runs(b *testing.B) {
	buildtest.RequireRoot(b)
	base := buildtest.BusyboxRegistry(b)
	dir := filepath.Join("..", "testdata", "bench", "runs20")
	opts := func(noCache bool) Options {
		return Options{ContextDir: filepath.Join(dir, "context"), Dockerfile: filepath.Join(dir, "Dockerfile"),
			BuildArgs: map[string]string{"BASE": base}, NoCache: noCache}
	}
	root := b.TempDir()
	open := func() *Builder {
		bl, err := New(Config{Root: root})
		if err != nil {
			b.Fatal(err)
		}
		return bl
	}
	ctx := context.Background()
	// Pull the base once, so the figures are about the steps.
	if _, err := buildFile(ctx, open(), opts(false)); err != nil {
		b.Fatal(err)
	}
	var cold, cached []time.Duration
	for i := 0; i < b.N; i++ {
		bl := open()
		start := time.Now()
		if _, err := buildFile(ctx, bl, opts(true)); err != nil {
			b.Fatal(err)
		}
		cold = append(cold, time.Since(start))
		for k := 0; k < 5; k++ {
			start = time.Now()
			res, err := buildFile(ctx, open(), opts(false))
			if err != nil {
				b.Fatal(err)
			}
			cached = append(cached, time.Since(start))
			if res.Cached != 20 {
				b.Fatalf("rebuild: %d of %d steps cached", res.Cached, res.Steps)
			}
		}
	}
	b.ReportMetric(float64(median(cold).Milliseconds()), "cold-ms")
	b.ReportMetric(float64(median(cold).Milliseconds())/20, "ms/RUN-step")
	b.ReportMetric(float64(median(cached).Microseconds())/1000, "cached-rebuild-ms")
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

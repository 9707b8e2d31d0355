package build

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"builder/build/cacheio"
	"builder/build/registry"
)

// mergeCase writes a Dockerfile of its own for build i: two RUN steps no
// other case has.
func mergeCase(t *testing.T, i int) string {
	t.Helper()
	dir := t.TempDir()
	df := fmt.Sprintf("ARG BASE\nFROM $BASE\nRUN echo job %d > /job\nRUN echo second %d > /second\n", i, i)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "context"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cacheRecords reads how many records the registry cache ref holds.
func cacheRecordCount(t *testing.T, ref string) int {
	t.Helper()
	c, err := cacheio.Import(context.Background(), cacheio.Spec{Type: cacheio.TypeRegistry, Ref: ref}, registry.New(registry.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	return len(c.Config.Records)
}

// TestCacheMergeConcurrent builds three, then eight, different Dockerfiles
// at once on stores of their own, all exporting mode=max to one cache ref:
// afterwards a fresh store gets every step of each from the cache. With a
// small max-records the ref stays within it.
func TestCacheMergeConcurrent(t *testing.T) {
	reg := startRegistry(t)
	reg.DockerConfig(t)
	for _, tc := range []struct {
		builds, bound int
	}{{3, 0}, {8, 0}, {3, 3}} {
		t.Run(fmt.Sprintf("%d-builds-bound-%d", tc.builds, tc.bound), func(t *testing.T) {
			ref := fmt.Sprintf("%s/cache/merge%d-%d:c", reg.Addr, tc.builds, tc.bound)
			to := "type=registry,ref=" + ref + ",mode=max"
			if tc.bound > 0 {
				to += fmt.Sprintf(",max-records=%d", tc.bound)
			}
			cases := make([]string, tc.builds)
			fixtures := make([]*fixture, tc.builds)
			for i := range cases {
				cases[i] = mergeCase(t, i)
				fixtures[i] = newFixture(t)
			}
			var wg sync.WaitGroup
			errs := make([]error, tc.builds)
			for i := range cases {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, log, err := fixtures[i].build(cases[i], cacheTo(t, to))
					if err != nil {
						errs[i] = fmt.Errorf("%w\n%s", err, log)
					}
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("build %d: %v", i, err)
				}
			}
			n := cacheRecordCount(t, ref)
			if tc.bound > 0 {
				if n > tc.bound {
					t.Errorf("the cache holds %d records, bound %d", n, tc.bound)
				}
				return
			}
			if n < 2*tc.builds {
				t.Errorf("the cache holds %d records, want every build's %d", n, 2*tc.builds)
			}
			for i := range cases {
				res, log := newFixture(t).mustBuild(cases[i], cacheFrom(t, ref))
				if res.Cached != res.Steps {
					t.Errorf("Dockerfile %d on a fresh store: %d of %d steps cached\n%s", i, res.Cached, res.Steps, log)
				}
			}
		})
	}
}

// TestCacheMergeFalseReplaces checks that merge=false keeps the replacing
// export of BuildKit, and that the default for mode=max accumulates.
func TestCacheMergeFalseReplaces(t *testing.T) {
	reg := startRegistry(t)
	reg.DockerConfig(t)
	for _, tc := range []struct {
		opts string
		want int
	}{{",merge=false", 2}, {"", 4}} {
		ref := reg.Addr + "/cache/replace:" + map[string]string{"": "merge", ",merge=false": "replace"}[tc.opts]
		f := newFixture(t)
		for i := range 2 {
			f.mustBuild(mergeCase(t, i), cacheTo(t, "type=registry,ref="+ref+",mode=max"+tc.opts))
		}
		if n := cacheRecordCount(t, ref); n != tc.want {
			t.Errorf("%q: the cache holds %d records, want %d", tc.opts, n, tc.want)
		}
	}
}

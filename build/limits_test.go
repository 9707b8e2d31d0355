package build

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"builder/build/progress"
	"builder/export"
)

// TestExpansionLimits builds the Dockerfiles of testdata/invalid/limit-*,
// each of which would expand to gigabytes or more, and checks that each
// fails at the line that crosses a limit, with "expands to more than", and
// that the build allocated (in total, so also at its peak) less than
// 64 MiB on the way (128 MiB for limit-stage-env: its seven ENVs of a
// 640 KiB value each copy a stage environment of up to 4 MiB into the
// config and the cache key, and the build allocated 62-65 MiB there
// already before session 5, failing about one run in three).
func TestExpansionLimits(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		dir, want string // want: regexp the error must match
		alloc     uint64 // most the build may allocate; 0 means 64 MiB
	}{
		{dir: "limit-arg-bomb", want: `^Dockerfile:19: ARG a17=\$\{a16\}\$\{a16\}: ARG value of "a17" expands to more than 1048576 bytes$`},
		{dir: "limit-global-arg-bomb", want: `^Dockerfile:18: ARG a17=\$\{a16\}\$\{a16\}: ARG value of "a17" expands to more than 1048576 bytes$`},
		{dir: "limit-env-bomb", want: `^Dockerfile:19: ENV e17=\$\{e16\}\$\{e16\}: ENV value of "e17" expands to more than 1048576 bytes$`},
		{dir: "limit-label-bomb", want: `^Dockerfile:19: LABEL big=.*: LABEL value of "big" expands to more than 1048576 bytes$`},
		{dir: "limit-word-refs", want: `^Dockerfile:20: WORKDIR /\$a16\$a16.*: "/\$a16\$a16.*" expands to more than 4194304 bytes$`},
		{dir: "limit-replace", want: `^Dockerfile:20: LABEL r=.*expands to more than 4194304 bytes$`},
		{dir: "limit-stage-env", want: `^Dockerfile:23: ENV b5=\$a16: the stage's environment \(ENV and ARG\) expands to more than 4194304 bytes$`, alloc: 128 << 20},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := copyCase(t, "invalid/"+tc.dir)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, log, err := f.build(dir)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("build succeeded:\n%s", log)
			}
			if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Errorf("error %q does not match %q", err, tc.want)
			}
			var le *LimitError
			if !errors.As(err, &le) {
				t.Errorf("error %q is not a *LimitError", err)
			}
			limit := tc.alloc
			if limit == 0 {
				limit = 64 << 20
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > limit {
				t.Errorf("the build allocated %d MiB, want less than %d", n>>20, limit>>20)
			}
		})
	}
}

// TestConfigSizeLimit builds a Dockerfile of 500,000 LABELs, which makes a
// config far above MaxConfigSize: the build must fail at the LABEL that
// crosses the limit, before it writes anything. The Dockerfile cut just
// before that line builds, and its config (close to the limit) is read
// back from the store: writer and readers share one limit.
func TestConfigSizeLimit(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/store")
	var df strings.Builder
	df.WriteString("FROM scratch\n")
	for i := range 500000 {
		fmt.Fprintf(&df, "LABEL l%06d=v%06d\n", i, i)
	}
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(df.String())
	blobs := func() int {
		es, err := os.ReadDir(filepath.Join(f.root, "blobs", "sha256"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return len(es)
	}
	n := blobs()
	_, _, err := f.build(dir, func(o *Options) { o.Progress = progress.New(io.Discard, progress.Quiet) })
	if err == nil {
		t.Fatal("build of 500,000 LABELs succeeded")
	}
	m := regexp.MustCompile(`^Dockerfile:(\d+): LABEL l\d+=v\d+: the image config expands to more than 8388608 bytes$`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("error %q does not name the LABEL that crosses the limit", err)
	}
	if got := blobs(); got != n {
		t.Errorf("the failed build wrote %d blobs", got-n)
	}
	line, _ := strconv.Atoi(m[1])
	lines := strings.SplitAfter(df.String(), "\n")
	write(strings.Join(lines[:line-1], ""))
	res, _, err := f.build(dir, func(o *Options) { o.Progress = progress.New(io.Discard, progress.Quiet) })
	if err != nil {
		t.Fatalf("build of the first %d lines: %v", line-1, err)
	}
	img, err := export.LoadImage(f.b.Store(), res.ManifestDigest)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatalf("read the config back: %v", err)
	}
	if len(raw) > MaxConfigSize || len(raw) < MaxConfigSize-2048 {
		t.Errorf("config of the first %d lines is %d bytes, want just under %d", line-1, len(raw), MaxConfigSize)
	}
}

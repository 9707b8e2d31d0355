package build

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"builder/build/progress"
	"builder/build/progress/progresstest"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden progress files")

// maskProgress replaces what changes from run to run in plain progress —
// timings, registry ports and digests — with fixed marks.
func maskProgress(s string) string {
	for _, m := range []struct{ re, to string }{
		{`(?m)^(#\d+) \d+\.\d{3} `, "$1 T.TTT "},
		{`DONE \d+\.\ds`, "DONE T.Ts"},
		{`127\.0\.0\.1:\d+`, "REGISTRY"},
		{`sha256:[0-9a-f]{64}`, "sha256:DIGEST"},
		{`(?m)^fetching (\S+) \(.*\)$`, "fetching $1 (SIZE)"},
		{`(?m)^download sha256:[0-9a-f]{12} .*$`, "download sha256:SHORT SIZE in Ts (RATE)"},
		{`\d+(\.\d+)?s\b`, "Ts"},
	} {
		s = regexp.MustCompile(m.re).ReplaceAllString(s, m.to)
	}
	return s
}

// checkGolden compares got with testdata/builds/<dir>/<name>; -update rewrites it.
func checkGolden(t *testing.T, dir, name, got string) {
	t.Helper()
	path := filepath.Join("..", "testdata", "builds", dir, name)
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file\n--- got:\n%s\n--- want:\n%s", name, got, want)
	}
}

func TestProgressPlainGolden(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/progress")
	_, uncached := f.mustBuild(dir)
	_, cached := f.mustBuild(dir)
	checkGolden(t, "progress", "uncached.golden", maskProgress(uncached))
	checkGolden(t, "progress", "cached.golden", maskProgress(cached))

	fail := copyCase(t, "builds/progress-fail")
	_, log, err := f.build(fail)
	var se *StepError
	if !errors.As(err, &se) || ExitCode(err) != 3 {
		t.Fatalf("want a StepError with exit code 3, got %v", err)
	}
	checkGolden(t, "progress-fail", "plain.golden", maskProgress(log))
}

func TestProgressTTYBuild(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/progress")
	tty, out := progresstest.OpenPTY(t, 100, 40)
	if m, err := progress.ParseMode("auto", tty); err != nil || m != progress.TTY {
		t.Fatalf("auto on a terminal = %q, %v; want tty", m, err)
	}
	p := progress.New(tty, progress.TTY)
	res, _ := f.mustBuild(dir, func(o *Options) { o.Progress = p })
	p.Printf("image %s", res.ManifestDigest)
	p.Close()
	tty.Close()
	final := progresstest.Replay(t, <-out, 100)
	t.Logf("final screen:\n%s", final)
	for i, want := range []string{
		`#1 \[stage-0 1/5\] FROM \$BASE +DONE \d+\.\ds`,
		`#2 \[stage-0 2/5\] RUN echo one && echo two +DONE \d+\.\ds`,
		`#3 \[stage-0 3/5\] COPY hello.txt /hello.txt +DONE \d+\.\ds`,
		`#4 \[stage-0 4/5\] ENV GREETING=hi +DONE \d+\.\ds`,
		`#5 \[stage-0 5/5\] RUN cat /hello.txt +DONE \d+\.\ds`,
		`image sha256:[0-9a-f]{64}`,
		`\[\+\] Finished \d+\.\ds \(5/5\)`,
	} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).MatchString(final) {
			t.Errorf("final screen lacks line %d: %s", i, want)
		}
	}
	if strings.Contains(final, "│") {
		t.Errorf("output of finished steps is still on the screen")
	}
}

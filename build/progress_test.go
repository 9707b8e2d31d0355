package build

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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

func TestProgressJSON(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgressMode(&buf, ProgressJSON)
	p.Printf("note %d", 1)
	s := p.Step("[stage-0 1/2] RUN echo hi")
	s.Write([]byte("hi\npartial"))
	s.Done()
	c := p.Step("[stage-0 2/2] COPY a b")
	c.Cached()
	e := p.Step("[stage-0 3/3] RUN false")
	e.Error(errors.New("exit code 1"))
	p.Close()

	type ev struct {
		Step     int      `json:"step"`
		Name     string   `json:"name"`
		Status   string   `json:"status"`
		Line     string   `json:"line"`
		Time     string   `json:"time"`
		Duration *float64 `json:"duration"`
		Error    string   `json:"error"`
	}
	want := []ev{
		{Status: "info", Line: "note 1"},
		{Step: 1, Name: "[stage-0 1/2] RUN echo hi", Status: "started"},
		{Step: 1, Name: "[stage-0 1/2] RUN echo hi", Status: "output", Line: "hi"},
		{Step: 1, Name: "[stage-0 1/2] RUN echo hi", Status: "output", Line: "partial"},
		{Step: 1, Name: "[stage-0 1/2] RUN echo hi", Status: "done"},
		{Step: 2, Name: "[stage-0 2/2] COPY a b", Status: "started"},
		{Step: 2, Name: "[stage-0 2/2] COPY a b", Status: "cached"},
		{Step: 3, Name: "[stage-0 3/3] RUN false", Status: "started"},
		{Step: 3, Name: "[stage-0 3/3] RUN false", Status: "error", Error: "exit code 1"},
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d events, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, l := range lines {
		var got ev
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, l)
		}
		if _, err := time.Parse(time.RFC3339Nano, got.Time); err != nil {
			t.Errorf("line %d: time %q: %v", i, got.Time, err)
		}
		ends := got.Status == "done" || got.Status == "cached" || got.Status == "error"
		if ends != (got.Duration != nil) {
			t.Errorf("line %d: duration %v on status %s", i, got.Duration, got.Status)
		}
		got.Time, got.Duration = "", nil
		if got != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got, want[i])
		}
	}
}

func TestProgressQuietKeepsTail(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, true)
	s := p.Step("x")
	for i := 0; i < 30; i++ {
		s.Write([]byte("line\n"))
	}
	s.Write([]byte("last"))
	if tail := s.Tail(); len(tail) != tailLines || tail[len(tail)-1] != "last" {
		t.Errorf("tail = %q", tail)
	}
	s.Done()
	p.Printf("hidden")
	p.Close()
	if buf.Len() != 0 {
		t.Errorf("quiet progress printed %q", buf.String())
	}
}

func TestParseProgressMode(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, c := range []struct {
		in   string
		want ProgressMode
		err  bool
	}{
		{"auto", ProgressPlain, false}, // a pipe is no terminal
		{"", ProgressPlain, false},
		{"plain", ProgressPlain, false},
		{"tty", ProgressTTY, false},
		{"rawjson", ProgressJSON, false},
		{"quiet", ProgressQuiet, false},
		{"fancy", "", true},
	} {
		got, err := ParseProgressMode(c.in, w)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("ParseProgressMode(%q) = %q, %v", c.in, got, err)
		}
	}
}

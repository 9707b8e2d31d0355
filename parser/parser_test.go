package parser

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// dumpGraph renders g as stable, indented JSON for the golden files.
func dumpGraph(t testing.TB, g *Graph) []byte {
	t.Helper()
	type step struct {
		Pos         string
		Original    string
		Instruction string
		Op          any
	}
	type stage struct {
		Index                          int
		Name, Base, Platform, Pos, Org string
		Steps                          []step
	}
	conv := func(s *Step) step {
		var op any = s.Op
		if h, ok := s.Op.(*Healthcheck); ok {
			op = struct {
				Test                                          []string
				Interval, Timeout, StartPeriod, StartInterval string
				Retries                                       int
			}{h.Test, h.Interval.String(), h.Timeout.String(), h.StartPeriod.String(), h.StartInterval.String(), h.Retries}
		}
		return step{Pos: posRange(s.Pos), Original: s.Original, Instruction: Instruction(s.Op), Op: op}
	}
	out := struct {
		File, Escape, Syntax string
		MetaArgs             []step
		Stages               []stage
		Warnings             []string
	}{File: g.File, Escape: string(g.Escape), Syntax: g.Syntax}
	for i, s := range g.MetaSteps {
		if s.Op != g.MetaArgs[i] {
			t.Fatalf("MetaSteps[%d].Op is not MetaArgs[%d]", i, i)
		}
		out.MetaArgs = append(out.MetaArgs, conv(s))
	}
	for i, s := range g.Stages {
		if s.Index != i {
			t.Fatalf("stage %d has Index %d", i, s.Index)
		}
		ds := stage{Index: s.Index, Name: s.Name, Base: s.Base, Platform: s.Platform, Pos: posRange(s.Pos), Org: s.Original}
		for _, st := range s.Steps {
			ds.Steps = append(ds.Steps, conv(st))
		}
		out.Stages = append(out.Stages, ds)
	}
	for _, w := range g.Warnings {
		out.Warnings = append(out.Warnings, posRange(w.Pos)+": "+w.Rule+": "+w.Message)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// posRange renders a position with its line range, "Dockerfile:3-5".
func posRange(p Pos) string {
	if p.EndLine > p.Line {
		return fmt.Sprintf("%s-%d", p, p.EndLine)
	}
	return p.String()
}

// golden compares got with the file at path, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func caseDirs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	if len(out) == 0 {
		t.Fatalf("no cases in %s", dir)
	}
	return out
}

func parseFile(t *testing.T, path string) (*Graph, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Parse("Dockerfile", f)
}

func TestParseValid(t *testing.T) {
	dir := filepath.Join("testdata", "dockerfiles")
	for _, name := range caseDirs(t, dir) {
		t.Run(name, func(t *testing.T) {
			g, err := parseFile(t, filepath.Join(dir, name, "Dockerfile"))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			golden(t, filepath.Join(dir, name, "graph.golden"), dumpGraph(t, g))
		})
	}
}

func TestParseInvalid(t *testing.T) {
	dir := filepath.Join("testdata", "invalid")
	for _, name := range caseDirs(t, dir) {
		t.Run(name, func(t *testing.T) {
			g, err := parseFile(t, filepath.Join(dir, name, "Dockerfile"))
			if err == nil {
				t.Fatalf("Parse succeeded with %d stages, want an error", len(g.Stages))
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			if pe.Pos.File != "Dockerfile" {
				t.Errorf("Pos.File = %q", pe.Pos.File)
			}
			if pe.Unwrap() == nil {
				t.Errorf("Unwrap() = nil")
			}
			golden(t, filepath.Join(dir, name, "error.golden"), []byte(err.Error()+"\n"))
		})
	}
}

// TestSuggestFlag checks a flag typo whose suggestion BuildKit picks among
// two equally close names (chown, chmod), so only the stable part is fixed.
func TestSuggestFlag(t *testing.T) {
	_, err := Parse("Dockerfile", strings.NewReader("FROM scratch\n\nCOPY --chwon=1:1 a b\n"))
	want := "Dockerfile:3: COPY --chwon=1:1 a b: unknown flag: --chwon (did you mean ch"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("err = %v, want prefix %q", err, want)
	}
}

func TestErrorFormat(t *testing.T) {
	base := errors.New("boom")
	long := "RUN " + strings.Repeat("é", 100)
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"instruction", &Error{Pos: Pos{File: "Dockerfile", Line: 7}, Instruction: "RUN foo bar", Err: base}, "Dockerfile:7: RUN foo bar: boom"},
		{"no instruction", &Error{Pos: Pos{File: "Dockerfile", Line: 7}, Err: base}, "Dockerfile:7: boom"},
		{"no line", &Error{Pos: Pos{File: "Dockerfile"}, Err: base}, "Dockerfile: boom"},
		{"long", &Error{Pos: Pos{File: "D", Line: 1}, Instruction: long, Err: base}, "D:1: " + long[:116] + "...: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, base) {
				t.Errorf("errors.Is(err, base) = false")
			}
		})
	}
}

func TestStageLookup(t *testing.T) {
	g, err := Parse("Dockerfile", strings.NewReader(
		"FROM alpine AS Build\nFROM build AS Out\nFROM scratch\nFROM busybox AS build\nCOPY --from=out / /\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		byName    int // index or -1
		before    int
		beforeIdx int // StageBefore(name, before) index or -1
	}{
		{"build", 3, 1, 0},
		{"BUILD", 3, 3, 0},
		{"build", 3, 4, 3},
		{"build", 3, 5, 3},
		{"out", 1, 1, -1},
		{"0", 0, 4, -1},
		{"2", 2, 4, -1},
		{"4", -1, 4, -1},
		{"-1", -1, 4, -1},
		{"+1", -1, 4, -1},
		{"", -1, 4, -1},
		{"missing", -1, 4, -1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.name, tt.before), func(t *testing.T) {
			s, ok := g.StageByName(tt.name)
			if got := index(s, ok); got != tt.byName {
				t.Errorf("StageByName(%q) = %d, want %d", tt.name, got, tt.byName)
			}
			s, ok = g.StageBefore(tt.name, tt.before)
			if got := index(s, ok); got != tt.beforeIdx {
				t.Errorf("StageBefore(%q, %d) = %d, want %d", tt.name, tt.before, got, tt.beforeIdx)
			}
		})
	}
}

func index(s *Stage, ok bool) int {
	if !ok {
		return -1
	}
	return s.Index
}

func TestParseOnbuild(t *testing.T) {
	pos := Pos{File: "Dockerfile", Line: 4, EndLine: 4}
	tests := []struct {
		expr    string
		want    Op
		wantErr string
	}{
		{expr: "RUN echo hi", want: &Run{Command: []string{"echo hi"}, PrependShell: true, Network: "default", Security: "sandbox"}},
		{expr: "COPY --chown=1:1 a b /d/", want: &Copy{Sources: []string{"a", "b"}, Dest: "/d/", Chown: "1:1"}},
		{expr: "RUN <<EOF\necho hi\nEOF", want: &Run{Command: []string{"<<EOF"}, PrependShell: true, Network: "default", Security: "sandbox",
			Heredocs: []Heredoc{{Name: "EOF", Content: "echo hi\n", Expand: true}}}},
		{expr: "env A=1", want: &Env{Pairs: []KeyValue{{Key: "A", Value: "1"}}}},
		{expr: "FROM alpine", wantErr: "Dockerfile:4: ONBUILD FROM alpine: FROM isn't allowed as an ONBUILD trigger"},
		{expr: "maintainer me", wantErr: "Dockerfile:4: ONBUILD maintainer me: MAINTAINER isn't allowed as an ONBUILD trigger"},
		{expr: "ONBUILD RUN x", wantErr: "Dockerfile:4: ONBUILD ONBUILD RUN x: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"},
		{expr: "RUNN x", wantErr: "Dockerfile:4: ONBUILD RUNN x: unknown instruction: RUNN (did you mean RUN?)"},
		{expr: "RUN a\nRUN b", wantErr: "Dockerfile:4: ONBUILD RUN a: onbuild trigger should be a single expression"},
		{expr: "", wantErr: "Dockerfile:4: ONBUILD: file with no instructions"},
		{expr: "COPY a", wantErr: "Dockerfile:4: ONBUILD COPY a: COPY requires at least two arguments, but only one was provided. Destination could not be determined"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			st, err := ParseOnbuild(tt.expr, pos)
			if tt.wantErr != "" {
				var pe *Error
				if !errors.As(err, &pe) || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Pos != pos {
				t.Errorf("Pos = %v", st.Pos)
			}
			got, _ := json.Marshal(st.Op)
			want, _ := json.Marshal(tt.want)
			if fmt.Sprintf("%T", st.Op) != fmt.Sprintf("%T", tt.want) || !bytes.Equal(got, want) {
				t.Errorf("Op = %T %s, want %T %s", st.Op, got, tt.want, want)
			}
		})
	}
}

// TestOnbuildRoundTrip parses the ONBUILD triggers of a file and parses
// their stored expressions again, as a child build does.
func TestOnbuildRoundTrip(t *testing.T) {
	g, err := parseFile(t, filepath.Join("testdata", "dockerfiles", "onbuild", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, s := range g.Stages {
		for _, st := range s.Steps {
			ob, ok := st.Op.(*Onbuild)
			if !ok {
				continue
			}
			n++
			if _, err := ParseOnbuild(ob.Expression, st.Pos); err != nil {
				t.Errorf("ParseOnbuild(%q): %v", ob.Expression, err)
			}
		}
	}
	if n < 3 {
		t.Fatalf("found %d ONBUILD steps, want at least 3", n)
	}
}

func TestParseMount(t *testing.T) {
	vars := map[string]string{"DIR": "/cache", "MODE": "0700", "T": "cache", "SZ": "1m"}
	expand := func(s string) (string, error) {
		return os.Expand(s, func(k string) string { return vars[k] }), nil
	}
	u := func(v uint64) *uint64 { return &v }
	tests := []struct {
		spec    string
		expand  bool
		want    RunMount
		wantErr string
	}{
		{spec: "type=cache,target=$DIR,mode=$MODE,id=x", expand: true,
			want: RunMount{Type: "cache", Target: "/cache", Mode: u(0o700), ID: "x"}},
		{spec: "type=cache,target=$DIR", want: RunMount{Type: "cache", Target: "$DIR"}},
		{spec: "type=$T,target=/c", expand: true, want: RunMount{Type: "cache", Target: "/c"}},
		{spec: "type=tmpfs,target=/t,size=$SZ", expand: true, want: RunMount{Type: "tmpfs", Target: "/t", Size: 1 << 20}},
		{spec: "target=/src,from=builder,source=/out,rw", want: RunMount{Type: "bind", Target: "/src", From: "builder", Source: "/out"}},
		{spec: "type=secret,id=tok,env=TOKEN,required", want: RunMount{Type: "secret", ID: "tok", Env: "TOKEN", ReadOnly: true, Required: true}},
		{spec: "type=ssh,uid=1000,gid=1000", want: RunMount{Type: "ssh", ReadOnly: true, UID: u(1000), GID: u(1000)}},
		{spec: "type=cache,target=/c,mode=$MODE", wantErr: "invalid value $MODE for mode"},
		{spec: "type=bind,target=/x,mode=0600", wantErr: `mode not allowed for "bind" type mounts`},
		{spec: "type=cache,target=/c,sharing=privat", wantErr: `unsupported sharing value "privat" (did you mean private?)`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			var ex func(string) (string, error)
			if tt.expand {
				ex = expand
			}
			m, err := ParseMount(tt.spec, ex)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Spec = tt.spec
			got, _ := json.Marshal(m)
			want, _ := json.Marshal(tt.want)
			if !bytes.Equal(got, want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestHeredocText(t *testing.T) {
	tests := []struct {
		h    Heredoc
		want string
	}{
		{Heredoc{Content: "\t\ta\n\tb\n c\n"}, "\t\ta\n\tb\n c\n"},
		{Heredoc{Content: "\t\ta\n\tb\n c\n", Chomp: true}, "a\nb\n c\n"},
	}
	for _, tt := range tests {
		if got := tt.h.Text(); got != tt.want {
			t.Errorf("Text(%q, chomp=%v) = %q, want %q", tt.h.Content, tt.h.Chomp, got, tt.want)
		}
	}
}

func TestLineTooLong(t *testing.T) {
	long := "RUN echo " + strings.Repeat("x", maxLine) + "\n"
	_, err := Parse("Dockerfile", strings.NewReader("FROM scratch\n"+long))
	want := "Dockerfile:2: dockerfile line greater than max allowed size of 65535"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	// The longest line BuildKit reads is accepted.
	ok := "RUN " + strings.Repeat("x", maxLine-5) + "\n"
	if _, err := Parse("Dockerfile", strings.NewReader("FROM scratch\n"+ok)); err != nil {
		t.Fatalf("line of %d bytes: %v", len(ok), err)
	}
}

func TestTooLarge(t *testing.T) {
	r := strings.NewReader("FROM scratch\n" + strings.Repeat("#\n", MaxSize/2))
	_, err := Parse("Dockerfile", r)
	var pe *Error
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "file larger than") {
		t.Fatalf("err = %v", err)
	}
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestReadError(t *testing.T) {
	_, err := Parse("Dockerfile", failReader{})
	if err == nil || err.Error() != "Dockerfile: read: disk on fire" {
		t.Fatalf("err = %v", err)
	}
}

func TestHealthcheckDurations(t *testing.T) {
	g, err := Parse("Dockerfile", strings.NewReader("FROM scratch\nHEALTHCHECK --interval=1m30s --timeout=5s --start-period=2s --start-interval=100ms --retries=7 CMD [\"true\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := g.Stages[0].Steps[0].Op.(*Healthcheck)
	want := Healthcheck{Test: []string{"CMD", "true"}, Interval: 90 * time.Second, Timeout: 5 * time.Second,
		StartPeriod: 2 * time.Second, StartInterval: 100 * time.Millisecond, Retries: 7}
	if fmt.Sprint(*h) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", *h, want)
	}
}

// TestLintError checks that # check=error=true turns warnings into the
// build error BuildKit gives, and that warnings alone are no error.
func TestLintError(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"FROM scratch as a\nfrom a AS b\n", ""},
		{"# check=error=true\nFROM scratch\n", ""},
		{"# check=error=true\nFROM scratch as a\nfrom a AS b\n", "lint violation found for rules: ConsistentInstructionCasing, FromAsCasing"},
		{"# check=skip=FromAsCasing;error=true\nFROM scratch as a\n", ""},
	} {
		g, err := Parse("Dockerfile", strings.NewReader(tc.src))
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		got := ""
		if err := g.LintError(); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%q: LintError() = %q, want %q (warnings %v)", tc.src, got, tc.want, g.Warnings)
		}
	}
}

// TestLintArgBomb parses global ARGs that double each other: the lint
// rules that evaluate ARG defaults must not expand them without bound.
func TestLintArgBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("ARG a0=0123456789abcdef\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "ARG a%d=${a%d}${a%d}\n", i, i-1, i-1)
	}
	b.WriteString("FROM busybox:$a40\n")
	start := time.Now()
	if _, err := Parse("Dockerfile", strings.NewReader(b.String())); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("parse took %v", d)
	}
}

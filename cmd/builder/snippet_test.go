package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/build"
	"builder/parser"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of snippet tests")

// TestSnippet quotes the failing lines of real Dockerfiles (testdata/snippet)
// with two lines of context, as golden files show; hostile lines (escape
// codes, thousands of characters, dozens of continuation lines) are made
// safe and cut.
func TestSnippet(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		line       int // the instruction of the Graph starting at this line fails
		golden     string
	}{
		{"multi-line RUN", "Dockerfile", 4, "run.golden"},
		{"first line", "Dockerfile", 1, "from.golden"},
		{"last line", "Dockerfile", 8, "last.golden"},
		{"hostile", "hostile.Dockerfile", 2, "hostile.golden"},
		{"hostile long line", "hostile.Dockerfile", 34, "hostile-long.golden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join("testdata", "snippet", tc.file)
			g, src, err := build.ReadDockerfileSource(path)
			if err != nil {
				t.Fatal(err)
			}
			var pos parser.Pos
			if tc.line == 1 {
				pos = g.Stages[0].Pos
			}
			for _, st := range g.Stages[0].Steps {
				if st.Pos.Line == tc.line {
					pos = st.Pos
				}
			}
			if pos.Line != tc.line {
				t.Fatalf("no instruction at line %d", tc.line)
			}
			err = &build.StepError{Step: parser.Error{Pos: pos, Instruction: "X", Err: errors.New("boom")}}
			got := snippet(withSource(fmt.Errorf("stage: %w", err), tc.file, src))
			if strings.ContainsAny(got, "\x1b\x07") {
				t.Errorf("the snippet passes control characters through:\n%q", got)
			}
			gp := filepath.Join("testdata", "snippet", tc.golden)
			if *updateGolden {
				os.WriteFile(gp, []byte(got+"\n"), 0o644)
			}
			want, _ := os.ReadFile(gp)
			if got+"\n" != string(want) {
				t.Errorf("snippet =\n%s\nwant\n%s", got, want)
			}
		})
	}
	// No snippet: no source, another file, a line past the end, no position.
	src := []byte("FROM scratch\n")
	for name, err := range map[string]error{
		"no source":   withSource(&parser.Error{Pos: parser.Pos{File: "Dockerfile", Line: 1}}, "Dockerfile", nil),
		"other file":  withSource(&parser.Error{Pos: parser.Pos{File: "other", Line: 1}}, "Dockerfile", src),
		"past EOF":    withSource(&parser.Error{Pos: parser.Pos{File: "Dockerfile", Line: 9}}, "Dockerfile", src),
		"no position": withSource(errors.New("registry down"), "Dockerfile", src),
	} {
		if got := snippet(err); got != "" {
			t.Errorf("%s: snippet %q, want none", name, got)
		}
	}
}

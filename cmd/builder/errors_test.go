package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"builder/build"
	"builder/build/sandbox"
	"builder/parser"
)

// TestErrorText checks the text the CLI prints after "ERROR:" for a
// failed step, plain or wrapped, and for other errors, and the exit code
// each maps to.
func TestErrorText(t *testing.T) {
	pos := parser.Pos{File: "Dockerfile", Line: 7, EndLine: 9}
	run := &build.StepError{
		Step:   parser.Error{Pos: pos, Instruction: "RUN make \\\n    all", Err: &sandbox.ExitError{Code: 2}},
		Output: []string{"cc: error", "make: *** [all] Error 1"},
	}
	long := &build.StepError{Step: parser.Error{Pos: pos, Instruction: "RUN " + strings.Repeat("x", 200), Err: errors.New("boom")}}
	for _, tc := range []struct {
		name string
		err  error
		want string
		code int
	}{
		{"failed RUN", run, "Dockerfile:7: RUN make \\ all: exit code: 2\n  output (last lines):\n  > cc: error\n  > make: *** [all] Error 1", 1},
		{"wrapped", fmt.Errorf("stage app: %w", run), "stage app: Dockerfile:7: RUN make \\ all: exit code: 2\n  output (last lines):\n  > cc: error\n  > make: *** [all] Error 1", 1},
		{"long instruction", long, "Dockerfile:7: RUN " + strings.Repeat("x", 113) + "...: boom", 1},
		{"parse error", &parser.Error{Pos: pos, Instruction: "FROBNICATE", Err: errors.New("unknown instruction: FROBNICATE")}, "Dockerfile:7: FROBNICATE: unknown instruction: FROBNICATE", 1},
		{"usage", usagef("--memory: %w", errors.New("bad size")), "--memory: bad size", 2},
		{"interrupted", &build.StepError{Step: parser.Error{Pos: pos, Instruction: "RUN sleep 9", Err: context.Canceled}}, "Dockerfile:7: RUN sleep 9: context canceled", 130},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorText(tc.err); got != tc.want {
				t.Errorf("errorText =\n%s\nwant\n%s", got, tc.want)
			}
			if got := exitCode(tc.err); got != tc.code {
				t.Errorf("exit code %d, want %d", got, tc.code)
			}
		})
	}
}

package build

import (
	"errors"
	"fmt"
	"strings"

	"builder/build/sandbox"
	"builder/parser"
)

// StepError is a failure of one Dockerfile step. Its message names the file,
// the line and the instruction, and for a failed RUN the exit code and the
// last lines of the command's output.
type StepError struct {
	Pos         parser.Pos
	Instruction string
	Err         error
	Output      []string // last lines of a failed RUN's output
}

func (e *StepError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: %v", e.Pos, oneLine(e.Instruction), e.Err)
	if len(e.Output) > 0 {
		b.WriteString("\n  output (last lines):")
		for _, l := range e.Output {
			b.WriteString("\n  > ")
			b.WriteString(l)
		}
	}
	return b.String()
}

func (e *StepError) Unwrap() error { return e.Err }

// ExitCode returns the exit code of a failed RUN, or 0 if err is not one.
func ExitCode(err error) int {
	var ee *sandbox.ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 0
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func asStepError(err error, target **StepError) bool { return errors.As(err, target) }

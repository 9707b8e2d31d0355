package build

import (
	"errors"
	"strings"

	"builder/build/sandbox"
	"builder/parser"
)

// StepError is a failure of one Dockerfile step: Step says where (the
// step's position and instruction) and why (Step.Err, the cause), and
// Output holds the last lines of a failed RUN's output. Its Error is
// Step's, "Dockerfile:7: RUN make: exit code: 2"; cmd/builder formats it
// for people, with the output. errors.As finds Step as a *parser.Error,
// the one positioned error type of parsing and building alike.
type StepError struct {
	Step   parser.Error
	Output []string // last lines of a failed RUN's output
}

// newStepError returns the StepError of a failure of the instruction at pos.
func newStepError(pos parser.Pos, instruction string, err error) *StepError {
	return &StepError{Step: parser.Error{Pos: pos, Instruction: instruction, Err: err}}
}

// Error returns the step's position, its instruction and the cause.
func (e *StepError) Error() string { return e.Step.Error() }

// Unwrap returns Step, whose Unwrap gives the cause.
func (e *StepError) Unwrap() error { return &e.Step }

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

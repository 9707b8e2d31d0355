package main

import (
	"errors"
	"fmt"
	"strings"

	"builder/build"
)

// errorText is how the CLI prints err. A failed Dockerfile step reads
// "Dockerfile:7: RUN make: exit code: 2", its instruction on one line and
// cut at 120 bytes, followed for a failed RUN by the last lines of its
// output; an error that wraps the step keeps its own words around it.
func errorText(err error) string {
	var se *build.StepError
	if !errors.As(err, &se) {
		return err.Error()
	}
	return strings.Replace(err.Error(), se.Error(), stepText(se), 1)
}

// stepText formats a failed step for people.
func stepText(se *build.StepError) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: %v", se.Step.Pos, oneLine(se.Step.Instruction), se.Step.Err)
	if len(se.Output) > 0 {
		b.WriteString("\n  output (last lines):")
		for _, l := range se.Output {
			b.WriteString("\n  > ")
			b.WriteString(l)
		}
	}
	return b.String()
}

// oneLine joins s's lines and runs of spaces into single spaces and cuts
// the result at 120 bytes.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

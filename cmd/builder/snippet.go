package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"builder/parser"
)

// Limits of a quoted Dockerfile snippet, so that a hostile Dockerfile
// cannot flood the terminal with one error.
const (
	snippetContext   = 2   // lines shown before and after the failing ones
	snippetMaxMarked = 10  // failing lines shown; the rest are elided
	snippetLineRunes = 200 // runes of a line shown
)

// sourceError is a build error together with the Dockerfile it is about,
// so that the CLI can quote the failing lines.
type sourceError struct {
	err  error
	file string // the base name errors use for the Dockerfile
	src  []byte
}

func (e *sourceError) Error() string { return e.err.Error() }

// Unwrap returns the build error.
func (e *sourceError) Unwrap() error { return e.err }

// withSource attaches the Dockerfile's text to err, if any.
func withSource(err error, file string, src []byte) error {
	if err == nil || src == nil {
		return err
	}
	return &sourceError{err: err, file: file, src: src}
}

// snippet quotes the Dockerfile lines err is about as buildx does: the
// position, a rule, two lines of context around the failing lines (marked
// >>>), a rule. It is "" for errors with no position in a Dockerfile whose
// text is known.
func snippet(err error) string {
	var se *sourceError
	var pe *parser.Error
	if !errors.As(err, &se) || !errors.As(err, &pe) || pe.Pos.Line <= 0 || pe.Pos.File != se.file {
		return ""
	}
	lines := strings.Split(strings.TrimSuffix(string(se.src), "\n"), "\n")
	first, last := pe.Pos.Line, max(pe.Pos.EndLine, pe.Pos.Line)
	if first > len(lines) {
		return ""
	}
	last = min(last, len(lines))
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n", pe.Pos, strings.Repeat("-", 20))
	width := len(fmt.Sprint(min(last+snippetContext, len(lines))))
	show := func(n int, mark string) {
		fmt.Fprintf(&b, " %*d | %s %s\n", width, n, mark, printable(lines[n-1]))
	}
	for n := max(1, first-snippetContext); n < first; n++ {
		show(n, "   ")
	}
	for n := first; n <= last; n++ {
		if n-first == snippetMaxMarked-1 && last-first >= snippetMaxMarked {
			fmt.Fprintf(&b, " %*s | >>> ... (%d more lines)\n", width, "", last-n)
			n = last
		}
		show(n, ">>>")
	}
	for n := last + 1; n <= min(last+snippetContext, len(lines)); n++ {
		show(n, "   ")
	}
	b.WriteString(strings.Repeat("-", 20))
	return b.String()
}

// printable makes a Dockerfile line safe to print: control characters
// (escape sequences) become '?', and it is cut at snippetLineRunes.
func printable(s string) string {
	s = strings.TrimSuffix(s, "\r")
	var b bytes.Buffer
	n := 0
	for _, r := range s {
		if n == snippetLineRunes {
			b.WriteString("...")
			break
		}
		if r == '\t' {
			r = ' '
		} else if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimRight(b.String(), " ")
}

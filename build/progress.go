package build

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Progress prints build steps in the style of buildx's plain progress: a
// "#N [stage i/n] INSTRUCTION" header, output lines prefixed with "#N" and the
// seconds since the step started, and "#N CACHED", "#N DONE 1.2s" or
// "#N ERROR: ..." at the end. It is safe for concurrent use by parallel stages.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	next  int
	quiet bool
}

// NewProgress returns a Progress writing to w. A quiet Progress prints nothing.
func NewProgress(w io.Writer, quiet bool) *Progress {
	if w == nil {
		w = io.Discard
	}
	return &Progress{w: w, quiet: quiet}
}

// Printf prints a line that belongs to no step.
func (p *Progress) Printf(format string, args ...any) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

// Step starts a numbered step and prints its header.
func (p *Progress) Step(header string) *StepProgress {
	p.mu.Lock()
	p.next++
	s := &StepProgress{p: p, n: p.next, start: time.Now()}
	if !p.quiet {
		fmt.Fprintf(p.w, "#%d %s\n", s.n, header)
	}
	p.mu.Unlock()
	return s
}

// StepProgress is the progress of one step. Its Write method takes the
// step's output, which it prints line by line as the lines complete.
type StepProgress struct {
	p     *Progress
	n     int
	start time.Time
	buf   []byte
	tail  []string // last lines of output, for error reports
}

// tailLines is how many lines of a step's output an error report repeats.
const tailLines = 20

// Write prints every complete line in b with the step's prefix.
func (s *StepProgress) Write(b []byte) (int, error) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.buf = append(s.buf, b...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		s.line(string(s.buf[:i]))
		s.buf = s.buf[i+1:]
	}
	return len(b), nil
}

func (s *StepProgress) line(l string) {
	l = strings.TrimSuffix(l, "\r")
	s.tail = append(s.tail, l)
	if len(s.tail) > tailLines {
		s.tail = s.tail[len(s.tail)-tailLines:]
	}
	if !s.p.quiet {
		fmt.Fprintf(s.p.w, "#%d %.3f %s\n", s.n, time.Since(s.start).Seconds(), l)
	}
}

func (s *StepProgress) flush() {
	if len(s.buf) > 0 {
		s.line(string(s.buf))
		s.buf = nil
	}
}

// Tail returns the last lines of output the step printed.
func (s *StepProgress) Tail() []string {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.flush()
	return append([]string(nil), s.tail...)
}

// Cached marks the step as served from the cache.
func (s *StepProgress) Cached() { s.end("CACHED") }

// Done marks the step as finished.
func (s *StepProgress) Done() { s.end(fmt.Sprintf("DONE %.1fs", time.Since(s.start).Seconds())) }

// Error marks the step as failed.
func (s *StepProgress) Error(err error) { s.end("ERROR: " + err.Error()) }

func (s *StepProgress) end(word string) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.flush()
	if !s.p.quiet {
		fmt.Fprintf(s.p.w, "#%d %s\n", s.n, word)
	}
}

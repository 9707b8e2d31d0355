// Package progress renders the events of a build: steps started, finished,
// served from the cache or failed, the lines of output they print, transfers
// of blobs and images, and messages outside any step. It draws them in one
// of four modes: buildx's plain format, a live view redrawn on a terminal,
// one JSON object per event (rawjson), or nothing. It knows nothing of how a
// build runs; package build emits the events and cmd/builder picks the mode.
package progress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Mode selects how a Progress shows the build.
type Mode string

// The modes. Plain is buildx's plain format, for logs; TTY is a live view
// redrawn in place on a terminal; JSON prints one JSON object per event
// (--progress=rawjson); Quiet prints nothing.
const (
	Plain Mode = "plain"
	TTY   Mode = "tty"
	JSON  Mode = "rawjson"
	Quiet Mode = "quiet"
)

// ParseMode reads a --progress value: auto, tty, plain, rawjson or quiet.
// Auto becomes TTY when out is a terminal and Plain otherwise; so does
// tty, as a live view's escape codes only garble a pipe or a file.
func ParseMode(s string, out *os.File) (Mode, error) {
	switch m := Mode(s); m {
	case Plain, JSON, Quiet:
		return m, nil
	case TTY, "auto", "":
		if out != nil && term.IsTerminal(int(out.Fd())) {
			return TTY, nil
		}
		return Plain, nil
	}
	return "", fmt.Errorf("unknown progress mode %q: use auto, tty, plain, rawjson or quiet", s)
}

// Progress reports the steps of a build. It is safe for concurrent use by
// parallel stages. A Progress in tty mode redraws the terminal from a
// goroutine until Close; Close is idempotent and needed in every mode.
type Progress struct {
	mu       sync.Mutex
	r        renderer
	next     int
	expected int // steps the build announced with Expect
	closed   bool
}

// renderer draws progress events; its methods are called with Progress.mu held.
type renderer interface {
	message(now time.Time, text string)
	start(s *Step)
	line(s *Step, now time.Time, text string)
	end(s *Step, now time.Time)
	transferStart(t *Transfer)
	transferEnd(t *Transfer, now time.Time)
	close(now time.Time)
}

// New returns a Progress writing to w in the given mode; an unknown mode
// prints plain, and a nil w prints nothing. In TTY mode w should be a
// terminal: its width and height are read on every redraw. Call Close when
// the build is over.
func New(w io.Writer, mode Mode) *Progress {
	if w == nil {
		w = io.Discard
		mode = Quiet
	}
	p := &Progress{}
	switch mode {
	case Quiet:
		p.r = quietRenderer{}
	case JSON:
		p.r = &jsonRenderer{enc: json.NewEncoder(w)}
	case TTY:
		p.r = newTTYRenderer(p, w)
	default:
		p.r = &plainRenderer{w: w}
	}
	return p
}

// Printf prints a line that belongs to no step.
func (p *Progress) Printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.r.message(time.Now(), fmt.Sprintf(format, args...))
}

// Line prints s as a line that belongs to no step; it fits the
// func(string) progress callbacks of pull and push.
func (p *Progress) Line(s string) { p.Printf("%s", s) }

// Close ends the progress: a tty view draws its final screen and stops
// redrawing. Later messages print as plain lines. Close is idempotent.
func (p *Progress) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	r := p.r
	p.mu.Unlock()
	r.close(time.Now()) // takes the lock itself: it may wait for the redraw goroutine
}

// Expect announces n more steps the build will run, so that a live view
// shows the total from the start rather than counting steps as they begin.
// More steps than expected may start; the total then grows.
func (p *Progress) Expect(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expected += n
}

// Step starts a numbered step and shows its header.
func (p *Progress) Step(header string) *Step {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	s := &Step{p: p, n: p.next, name: header, start: time.Now()}
	p.r.start(s)
	return s
}

// stepState is where a step is in its life.
type stepState int

const (
	stepRunning stepState = iota
	stepCached
	stepDone
	stepError
)

// Step is the progress of one step. Its Write method takes the step's
// output, which is shown line by line as the lines complete. A step ends
// once, with Cached, Done or Error; later calls change nothing.
type Step struct {
	p     *Progress
	n     int
	name  string
	start time.Time
	buf   []byte
	tail  []string // last lines of output, for error reports

	state stepState
	end   time.Time
	err   string
}

// tailLines is how many lines of a step's output an error report repeats.
const tailLines = 20

// Write shows every complete line in b as output of the step.
func (s *Step) Write(b []byte) (int, error) {
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

func (s *Step) line(l string) {
	l = strings.TrimSuffix(l, "\r")
	s.tail = append(s.tail, l)
	if len(s.tail) > tailLines {
		s.tail = s.tail[len(s.tail)-tailLines:]
	}
	s.p.r.line(s, time.Now(), l)
}

// Note shows a line of the builder's own about the step (why it missed
// the cache) among its output. Unlike output it is not kept for Tail, so
// an error report never passes it off as the command's.
func (s *Step) Note(text string) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	for _, l := range strings.Split(text, "\n") {
		s.p.r.line(s, time.Now(), l)
	}
}

func (s *Step) flush() {
	if len(s.buf) > 0 {
		s.line(string(s.buf))
		s.buf = nil
	}
}

// Tail returns the last lines of output the step printed.
func (s *Step) Tail() []string {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.flush()
	return append([]string(nil), s.tail...)
}

// Cached marks the step as served from the cache.
func (s *Step) Cached() { s.finish(stepCached, "") }

// Done marks the step as finished.
func (s *Step) Done() { s.finish(stepDone, "") }

// Error marks the step as failed.
func (s *Step) Error(err error) { s.finish(stepError, err.Error()) }

func (s *Step) finish(st stepState, msg string) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.flush()
	if s.state != stepRunning {
		return
	}
	s.state, s.err, s.end = st, msg, time.Now()
	s.p.r.end(s, s.end)
}

// plainRenderer prints buildx's plain progress format.
type plainRenderer struct{ w io.Writer }

func (r *plainRenderer) message(_ time.Time, text string) { fmt.Fprintln(r.w, text) }
func (r *plainRenderer) start(s *Step)                    { fmt.Fprintf(r.w, "#%d %s\n", s.n, s.name) }
func (r *plainRenderer) close(time.Time)                  {}

func (r *plainRenderer) line(s *Step, now time.Time, text string) {
	fmt.Fprintf(r.w, "#%d %.3f %s\n", s.n, now.Sub(s.start).Seconds(), text)
}

func (r *plainRenderer) end(s *Step, now time.Time) {
	switch s.state {
	case stepCached:
		fmt.Fprintf(r.w, "#%d CACHED\n", s.n)
	case stepDone:
		fmt.Fprintf(r.w, "#%d DONE %.1fs\n", s.n, now.Sub(s.start).Seconds())
	case stepError:
		fmt.Fprintf(r.w, "#%d ERROR: %s\n", s.n, s.err)
	}
}

// The plain view prints a transfer once, when it ends, with its size and rate.
func (r *plainRenderer) transferStart(*Transfer) {}
func (r *plainRenderer) transferEnd(t *Transfer, _ time.Time) {
	fmt.Fprintln(r.w, t.summary())
}

// quietRenderer shows nothing.
type quietRenderer struct{}

func (quietRenderer) message(time.Time, string)        {}
func (quietRenderer) start(*Step)                      {}
func (quietRenderer) line(*Step, time.Time, string)    {}
func (quietRenderer) end(*Step, time.Time)             {}
func (quietRenderer) close(time.Time)                  {}
func (quietRenderer) transferStart(*Transfer)          {}
func (quietRenderer) transferEnd(*Transfer, time.Time) {}

// jsonEvent is one line of rawjson progress.
type jsonEvent struct {
	Step     int      `json:"step"`
	Name     string   `json:"name,omitempty"`
	Status   string   `json:"status"`
	Line     string   `json:"line,omitempty"`
	Time     string   `json:"time"`
	Duration *float64 `json:"duration,omitempty"`
	Error    string   `json:"error,omitempty"`
	// Transfers (status "transfer-started", "transfer-done",
	// "transfer-error") carry their label, bytes moved and expected.
	Transfer string `json:"transfer,omitempty"`
	Bytes    *int64 `json:"bytes,omitempty"`
	Total    int64  `json:"total,omitempty"`
}

// jsonRenderer prints one JSON object per event. Step 0 with status "info"
// is a message outside any step; status "output" carries a line of output.
type jsonRenderer struct{ enc *json.Encoder }

func (r *jsonRenderer) emit(e jsonEvent, now time.Time) {
	e.Time = now.UTC().Format(time.RFC3339Nano)
	_ = r.enc.Encode(e)
}

func (r *jsonRenderer) message(now time.Time, text string) {
	r.emit(jsonEvent{Status: "info", Line: text}, now)
}

func (r *jsonRenderer) start(s *Step) {
	r.emit(jsonEvent{Step: s.n, Name: s.name, Status: "started"}, s.start)
}

func (r *jsonRenderer) line(s *Step, now time.Time, text string) {
	r.emit(jsonEvent{Step: s.n, Name: s.name, Status: "output", Line: text}, now)
}

func (r *jsonRenderer) end(s *Step, now time.Time) {
	d := now.Sub(s.start).Seconds()
	e := jsonEvent{Step: s.n, Name: s.name, Duration: &d, Error: s.err}
	switch s.state {
	case stepCached:
		e.Status = "cached"
	case stepDone:
		e.Status = "done"
	default:
		e.Status = "error"
	}
	r.emit(e, now)
}

func (r *jsonRenderer) close(time.Time) {}

func (r *jsonRenderer) transferStart(t *Transfer) {
	r.emit(jsonEvent{Status: "transfer-started", Transfer: t.label, Total: t.total}, t.start)
}

func (r *jsonRenderer) transferEnd(t *Transfer, now time.Time) {
	d, n := now.Sub(t.start).Seconds(), t.Moved()
	e := jsonEvent{Status: "transfer-done", Transfer: t.label, Bytes: &n, Total: t.total, Duration: &d}
	if t.err != nil {
		e.Status, e.Error = "transfer-error", t.err.Error()
	}
	r.emit(e, now)
}

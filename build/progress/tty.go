package progress

import (
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/term"
)

// ttyRefresh is the interval between redraws of the live view: at most
// ten a second, so fast output never floods the terminal.
const ttyRefresh = 100 * time.Millisecond

// ttyTail is how many output lines of a running step the live view shows.
const ttyTail = 6

// ttyRenderer draws a live view at the bottom of a terminal: a header with
// the elapsed time, one line per step that is running or finished after a
// running one, and the last lines of each running step's output. Steps that
// finished before every running step, and messages, are printed once above
// the view and scroll away as normal output. Each redraw moves the cursor
// back to the top of the view and rewrites it, clearing every line it
// writes, so nothing flickers or is left behind. Lines are cut to the
// terminal's width, read again on every redraw, so they never wrap.
type ttyRenderer struct {
	p     *Progress
	w     io.Writer
	fd    int // the terminal's descriptor, or -1
	begin time.Time

	live   []*Step     // steps shown in the live view
	moving []*Transfer // transfers running, shown under the steps
	total  int         // steps started
	ended  int         // steps finished
	drawn  int         // lines of live view now on the screen
	dirty  bool
	closed bool

	ticks     <-chan time.Time // when to consider a redraw
	stopTicks func()           // stops ticks' source
	stop      chan struct{}
	done      chan struct{}
}

func newTTYRenderer(p *Progress, w io.Writer) *ttyRenderer {
	t := time.NewTicker(ttyRefresh)
	r := newTTYRendererTicks(p, w, t.C)
	r.stopTicks = t.Stop
	return r
}

// newTTYRendererTicks returns a renderer that considers a redraw at each
// time ticks delivers; tests deliver explicit times.
func newTTYRendererTicks(p *Progress, w io.Writer, ticks <-chan time.Time) *ttyRenderer {
	r := &ttyRenderer{p: p, w: w, fd: -1, begin: time.Now(), ticks: ticks, stopTicks: func() {},
		stop: make(chan struct{}), done: make(chan struct{})}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		r.fd = int(f.Fd())
	}
	go r.loop()
	return r
}

// loop redraws the view at every tick (every ttyRefresh) while it changed
// or something runs.
func (r *ttyRenderer) loop() {
	defer close(r.done)
	defer r.stopTicks()
	for {
		select {
		case <-r.stop:
			return
		case now := <-r.ticks:
			r.p.mu.Lock()
			if r.dirty || len(r.live) > 0 || len(r.moving) > 0 {
				r.redraw(now, nil)
			}
			r.p.mu.Unlock()
		}
	}
}

func (r *ttyRenderer) size() (int, int) {
	if r.fd >= 0 {
		if w, h, err := term.GetSize(r.fd); err == nil && w > 0 && h > 0 {
			return w, h
		}
	}
	return 80, 24
}

func (r *ttyRenderer) message(now time.Time, text string) {
	if r.closed {
		fmt.Fprintln(r.w, text)
		return
	}
	r.redraw(now, []string{text})
}

func (r *ttyRenderer) start(s *Step) {
	if r.closed {
		fmt.Fprintf(r.w, "#%d %s\n", s.n, s.name)
		return
	}
	r.total++
	r.live = append(r.live, s)
	r.dirty = true
}

func (r *ttyRenderer) line(*Step, time.Time, string) { r.dirty = true }

func (r *ttyRenderer) end(s *Step, now time.Time) {
	if r.closed {
		fmt.Fprintf(r.w, "#%d %s\n", s.n, stateWord(s, now))
		return
	}
	r.ended++
	r.dirty = true
}

func (r *ttyRenderer) transferStart(t *Transfer) {
	if r.closed {
		return
	}
	r.moving = append(r.moving, t)
	r.dirty = true
}

// transferEnd takes the transfer out of the live view and prints its
// summary above it for good.
func (r *ttyRenderer) transferEnd(t *Transfer, now time.Time) {
	for i, m := range r.moving {
		if m == t {
			r.moving = append(r.moving[:i], r.moving[i+1:]...)
			break
		}
	}
	r.message(now, t.summary())
}

func (r *ttyRenderer) close(now time.Time) {
	close(r.stop)
	<-r.done
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	r.redraw(now, nil)
	// The final view stays on the screen as ordinary output.
	r.drawn = 0
	r.live = nil
	r.moving = nil
	r.closed = true
}

// stateWord is the right-hand column of a step's line.
func stateWord(s *Step, now time.Time) string {
	switch s.state {
	case stepCached:
		return "CACHED"
	case stepDone:
		return fmt.Sprintf("DONE %.1fs", s.end.Sub(s.start).Seconds())
	case stepError:
		return fmt.Sprintf("ERROR %.1fs", s.end.Sub(s.start).Seconds())
	}
	return fmt.Sprintf("%.1fs", now.Sub(s.start).Seconds())
}

// redraw rewrites the view: finished steps before the first running one
// and msgs go above it for good, then the live view follows.
func (r *ttyRenderer) redraw(now time.Time, msgs []string) {
	width, height := r.size()
	var b strings.Builder
	if r.drawn > 0 {
		fmt.Fprintf(&b, "\r\x1b[%dA", r.drawn)
	}
	put := func(s string) {
		b.WriteString(fit(s, width))
		b.WriteString("\x1b[K\n")
	}
	for len(r.live) > 0 && r.live[0].state != stepRunning {
		r.stepLines(r.live[0], now, width, put)
		r.live = r.live[1:]
	}
	// Messages (the build summary among them) go above the view for good:
	// cut to the width they would lose what matters at their end, so they
	// are folded onto as many lines as they need.
	for _, m := range msgs {
		for _, l := range fold(fit(m, math.MaxInt), width-1) {
			put(l)
		}
	}
	var view []string
	add := func(s string) { view = append(view, s) }
	status := "Building"
	if r.stopped() {
		status = "Finished"
		if r.ended < r.total {
			status = "Stopped"
		}
	}
	add(fmt.Sprintf("[+] %s %.1fs (%d/%d)", status, now.Sub(r.begin).Seconds(), r.ended, max(r.total, r.p.expected)))
	for _, s := range r.live {
		r.stepLines(s, now, width, add)
	}
	for _, t := range r.moving {
		add(" => " + t.live(now))
	}
	// Never draw more lines than the terminal holds: a view taller than
	// the screen cannot be moved back over.
	if max := height - 1; len(view) > max && max > 0 {
		view = append(view[:1], view[len(view)-max+1:]...)
	}
	for _, l := range view {
		put(l)
	}
	b.WriteString("\x1b[J")
	r.drawn = len(view)
	r.dirty = false
	io.WriteString(r.w, b.String())
}

// stopped reports whether Close has begun.
func (r *ttyRenderer) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// stepLines emits a step's line, right-aligned state, and for a running
// step the last lines of its output; for a failed step, the error.
func (r *ttyRenderer) stepLines(s *Step, now time.Time, width int, emit func(string)) {
	state := stateWord(s, now)
	head := fmt.Sprintf("#%d %s", s.n, s.name)
	room := width - utf8.RuneCountInString(state) - 2
	if room < 10 {
		room = 10
	}
	head = fit(head, room)
	pad := room - utf8.RuneCountInString(head)
	emit(head + strings.Repeat(" ", pad+1) + state)
	switch s.state {
	case stepRunning:
		tail := s.tail
		if len(tail) > ttyTail {
			tail = tail[len(tail)-ttyTail:]
		}
		for _, l := range tail {
			emit("  │ " + l)
		}
	case stepError:
		msg, _, _ := strings.Cut(s.err, "\n")
		emit("  ERROR: " + msg)
	}
}

// fold splits s into pieces of at most width runes.
func fold(s string, width int) []string {
	r := []rune(s)
	if width < 1 || len(r) <= width {
		return []string{s}
	}
	var out []string
	for len(r) > width {
		out = append(out, string(r[:width]))
		r = r[width:]
	}
	return append(out, string(r))
}

// fit makes s safe to print on one terminal line of the given width: control
// characters become spaces and the text is cut to width-1 runes.
func fit(s string, width int) string {
	var b strings.Builder
	n := 0
	for _, c := range s {
		if n >= width-1 {
			break
		}
		switch {
		case c == '\t':
			c = ' '
		case c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0):
			c = ' '
		}
		b.WriteRune(c)
		n++
	}
	return b.String()
}

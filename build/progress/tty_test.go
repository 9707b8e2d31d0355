package progress

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"builder/build/progress/progresstest"
)

// ttyProgress is a Progress drawing a live view on a pseudo-terminal of
// cols×rows that redraws at the times sent on ticks; out gives all that
// was written once tty is closed.
type ttyProgress struct {
	*Progress
	r     *ttyRenderer
	tty   *os.File
	out   <-chan []byte
	ticks chan time.Time
}

func newTTYProgress(t *testing.T, cols, rows int) *ttyProgress {
	tty, out := progresstest.OpenPTY(t, cols, rows)
	tp := &ttyProgress{Progress: &Progress{}, tty: tty, out: out, ticks: make(chan time.Time)}
	tp.r = newTTYRendererTicks(tp.Progress, tty, tp.ticks)
	tp.Progress.r = tp.r
	return tp
}

func TestTTYNarrowAndFast(t *testing.T) {
	tp := newTTYProgress(t, 30, 8)
	p, r, ticks, tty, out := tp.Progress, tp.r, tp.ticks, tp.tty, tp.out
	var steps []*Step
	for i := 0; i < 12; i++ {
		steps = append(steps, p.Step("[stage-0 "+strconv.Itoa(i+1)+"/12] RUN a command longer than the terminal"))
	}
	for i := 0; i < 2000; i++ {
		steps[0].Write([]byte("a long line of output\twith a tab and \x1b[31mcolour\n"))
	}
	// Three redraws while every step runs; each send returns once the
	// renderer has taken the tick, so the previous redraw is done.
	for i := range 3 {
		ticks <- r.begin.Add(time.Duration(i+1) * ttyRefresh)
	}
	for i := len(steps) - 1; i >= 0; i-- {
		steps[i].Done()
	}
	p.Close()
	tty.Close()
	final := progresstest.Replay(t, <-out, 30)
	for i := 1; i <= 12; i++ {
		if !regexp.MustCompile(`(?m)^#` + strconv.Itoa(i) + ` .* DONE \d+\.\ds$`).MatchString(final) {
			t.Errorf("step %d not DONE on the final screen:\n%s", i, final)
		}
	}
}

// TestTTYSummaryNotCut: messages above the live view (the build summary)
// keep their whole text on a narrow terminal; they wrap instead.
func TestTTYSummaryNotCut(t *testing.T) {
	for _, width := range []int{80, 40} {
		tp := newTTYProgress(t, width, 10)
		p, tty, out := tp.Progress, tp.tty, tp.out
		s := p.Step("[stage-0 2/2] RUN true")
		s.Done()
		msg := "image sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef, 3 layers, 1.2MiB"
		p.Printf("%s", msg)
		p.Close()
		tty.Close()
		final := progresstest.Replay(t, <-out, width)
		squeeze := strings.NewReplacer("\n", "", " ", "")
		if !strings.Contains(squeeze.Replace(final), squeeze.Replace(msg)) {
			t.Errorf("width %d: the summary lost text:\n%s", width, final)
		}
	}
}

// TestTTYTotalFromGraph: the header's denominator is the number of steps
// the build announced, not the number started so far.
func TestTTYTotalFromGraph(t *testing.T) {
	tp := newTTYProgress(t, 80, 10)
	p, r, ticks, tty, out := tp.Progress, tp.r, tp.ticks, tp.tty, tp.out
	p.Expect(5)
	s := p.Step("[stage-0 1/5] FROM scratch")
	ticks <- r.begin.Add(ttyRefresh)
	s.Done()
	ticks <- r.begin.Add(2 * ttyRefresh)
	p.Close()
	tty.Close()
	raw := string(<-out)
	if !strings.Contains(raw, "(0/5)") || !strings.Contains(raw, "(1/5)") || strings.Contains(raw, "(0/1)") || strings.Contains(raw, "(1/1)") {
		t.Errorf("the header does not count against the announced 5 steps:\n%q", raw)
	}
}

// TestNoteNotInTail: the builder's own notes show among a step's output
// but are not part of the output an error report repeats.
func TestNoteNotInTail(t *testing.T) {
	var b strings.Builder
	p := New(&b, Plain)
	s := p.Step("[stage-0 2/2] RUN false")
	s.Note("cache miss: the command changed")
	s.Write([]byte("the command's own line\n"))
	if tail := s.Tail(); len(tail) != 1 || tail[0] != "the command's own line" {
		t.Errorf("Tail = %q, want only the command's line", tail)
	}
	s.Error(errors.New("exit code: 1"))
	p.Close()
	if !strings.Contains(b.String(), "cache miss: the command changed") {
		t.Errorf("the note is not shown:\n%s", b.String())
	}
}

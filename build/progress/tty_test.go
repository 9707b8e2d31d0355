package progress

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"builder/build/progress/progresstest"
)

func TestTTYNarrowAndFast(t *testing.T) {
	tty, out := progresstest.OpenPTY(t, 30, 8)
	ticks := make(chan time.Time)
	p := &Progress{}
	r := newTTYRendererTicks(p, tty, ticks)
	p.r = r
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

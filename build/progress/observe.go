package progress

import (
	"fmt"
	"io"
	"time"
)

// Kind is what an Event reports.
type Kind string

// The kinds of Event.
const (
	KindMessage Kind = "message" // a line outside any step (Text)
	KindStart   Kind = "start"   // a step began (Name)
	KindLine    Kind = "line"    // a line of a step's output (Text)
	KindCached  Kind = "cached"  // a step was served from the cache
	KindDone    Kind = "done"    // a step finished
	KindError   Kind = "error"   // a step failed (Text is the error)
)

// Event is one thing a Progress showed, as an Observer sees it: enough to
// draw the plain progress again later (see Replay).
type Event struct {
	Kind Kind      `json:"kind"`
	Time time.Time `json:"time"`
	Step int       `json:"step,omitempty"`
	Name string    `json:"name,omitempty"`
	Text string    `json:"text,omitempty"`
}

// Observer receives every event of a Progress, in order, whatever its
// mode. It is called with the Progress locked: it must not call back into
// the Progress, and it should return quickly.
type Observer interface {
	Observe(Event)
}

// AddObserver makes o see every later event of p. Call it before the
// build starts.
func (p *Progress) AddObserver(o Observer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.r = &observedRenderer{renderer: p.r, o: o}
}

// observedRenderer passes every event to an Observer and then to the
// renderer it wraps.
type observedRenderer struct {
	renderer
	o Observer
}

func (r *observedRenderer) message(now time.Time, text string) {
	r.o.Observe(Event{Kind: KindMessage, Time: now, Text: text})
	r.renderer.message(now, text)
}

func (r *observedRenderer) start(s *Step) {
	r.o.Observe(Event{Kind: KindStart, Time: s.start, Step: s.n, Name: s.name})
	r.renderer.start(s)
}

func (r *observedRenderer) line(s *Step, now time.Time, text string) {
	r.o.Observe(Event{Kind: KindLine, Time: now, Step: s.n, Text: text})
	r.renderer.line(s, now, text)
}

func (r *observedRenderer) end(s *Step, now time.Time) {
	e := Event{Time: now, Step: s.n}
	switch s.state {
	case stepCached:
		e.Kind = KindCached
	case stepDone:
		e.Kind = KindDone
	default:
		e.Kind, e.Text = KindError, s.err
	}
	r.o.Observe(e)
	r.renderer.end(s, now)
}

func (r *observedRenderer) transferEnd(t *Transfer, now time.Time) {
	r.o.Observe(Event{Kind: KindMessage, Time: now, Text: t.summary()})
	r.renderer.transferEnd(t, now)
}

// Replay prints events in the plain format, with the times they carry, as
// the build printed them with --progress=plain. Lines of steps that never
// started are printed under their number all the same.
func Replay(w io.Writer, events []Event) error {
	pr := &plainRenderer{w: w}
	steps := map[int]*Step{}
	step := func(n int, t time.Time) *Step {
		s := steps[n]
		if s == nil {
			s = &Step{n: n, start: t}
			steps[n] = s
		}
		return s
	}
	for _, e := range events {
		switch e.Kind {
		case KindMessage:
			pr.message(e.Time, e.Text)
		case KindStart:
			s := step(e.Step, e.Time)
			s.name, s.start = e.Name, e.Time
			pr.start(s)
		case KindLine:
			pr.line(step(e.Step, e.Time), e.Time, e.Text)
		case KindCached, KindDone, KindError:
			s := step(e.Step, e.Time)
			s.state, s.err = map[Kind]stepState{KindCached: stepCached, KindDone: stepDone, KindError: stepError}[e.Kind], e.Text
			pr.end(s, e.Time)
		default:
			return fmt.Errorf("replay: unknown event kind %q", e.Kind)
		}
	}
	return nil
}

package record

import (
	"encoding/json"
	"io"
	"time"
)

// traceEvent is one event of the Chrome Trace Event Format, as
// chrome://tracing and Perfetto load it: "X" complete events with a start
// (ts) and duration (dur) in microseconds, and "M" metadata naming the
// process and threads.
type traceEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	Ts   int64          `json:"ts"`
	Dur  *int64         `json:"dur,omitempty"`
	Pid  int            `json:"pid"`
	Tid  int            `json:"tid"`
	Args map[string]any `json:"args,omitempty"`
}

// traceFile is the JSON object form of a trace.
type traceFile struct {
	TraceEvents     []traceEvent `json:"traceEvents"`
	DisplayTimeUnit string       `json:"displayTimeUnit"`
}

// Trace writes r (read with its steps) as a Chrome trace: one process for
// the build, one thread (track) per stage in the order the stages began,
// and a complete event per step, timed from the build's start. Steps of no
// stage (cache import and export) share a track named "build". A step that
// never ended lasts until the build's end, or its last known event.
func (r *Record) Trace(w io.Writer) error {
	const pid = 1
	tids := map[string]int{}
	events := []traceEvent{{Name: "process_name", Ph: "M", Pid: pid, Tid: 0,
		Args: map[string]any{"name": "build " + r.ID}}}
	end := r.End
	for _, s := range r.Steps {
		if s.End.After(end) {
			end = s.End
		}
		if s.Start.After(end) {
			end = s.Start
		}
	}
	us := func(t time.Time) int64 { return t.Sub(r.Start).Microseconds() }
	for _, s := range r.Steps {
		stage := s.Stage
		if stage == "" {
			stage = "build"
		}
		tid, ok := tids[stage]
		if !ok {
			tid = len(tids) + 1
			tids[stage] = tid
			events = append(events,
				traceEvent{Name: "thread_name", Ph: "M", Pid: pid, Tid: tid, Args: map[string]any{"name": stage}},
				traceEvent{Name: "thread_sort_index", Ph: "M", Pid: pid, Tid: tid, Args: map[string]any{"sort_index": tid}})
		}
		stop := s.End
		if stop.IsZero() {
			stop = end
		}
		dur := max(us(stop)-us(s.Start), 0)
		args := map[string]any{"step": s.N, "state": s.State, "lines": s.Lines}
		if s.CacheMiss != "" {
			args["cacheMiss"] = s.CacheMiss
		}
		if s.Error != "" {
			args["error"] = s.Error
		}
		events = append(events, traceEvent{Name: s.Name, Cat: s.State, Ph: "X", Ts: max(us(s.Start), 0), Dur: &dur,
			Pid: pid, Tid: tid, Args: args})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(traceFile{TraceEvents: events, DisplayTimeUnit: "ms"})
}

package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"builder/build/progress"
)

// runBuild records a build through a real Progress: steps as the build
// package names them, with output, and returns the writer and what the
// plain progress printed live.
func runBuild(t *testing.T, root string, l Limits, fail bool) (*Writer, string) {
	t.Helper()
	var live bytes.Buffer
	p := progress.New(&live, progress.Plain)
	w, err := Start(root, Record{Command: []string{"builder", "build", "."}}, l)
	if err != nil {
		t.Fatal(err)
	}
	p.AddObserver(w)
	p.Printf("context: test")
	s1 := p.Step("[base 1/2] FROM scratch")
	s1.Done()
	s2 := p.Step("[base 2/2] RUN make")
	s2.Write([]byte("cache miss: no earlier build of this step is recorded\n"))
	s2.Write([]byte("compiling\nlinking"))
	s3 := p.Step("[app 1/1] COPY --from=base / /")
	s3.Cached()
	var res Result
	if fail {
		s2.Error(errors.New("exit status 2"))
		res.Err = errors.New("Dockerfile:2: RUN make: exit status 2")
	} else {
		s2.Done()
		res.Image = "sha256:" + strings.Repeat("a", 64)
	}
	p.Close()
	return w, live.String()
}

func TestRecordRoundTrip(t *testing.T) {
	for _, fail := range []bool{false, true} {
		root := t.TempDir()
		w, live := runBuild(t, root, Limits{}, fail)
		if r, err := Load(root, w.ID()); err != nil || r.State != Running {
			t.Fatalf("before Finish: %+v %v, want running", r, err)
		}
		res := Result{}
		if fail {
			res.Err = errors.New("Dockerfile:2: RUN make: exit status 2")
		}
		if err := w.Finish(res); err != nil {
			t.Fatal(err)
		}
		r, err := Load(root, w.ID())
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{false: Completed, true: Failed}[fail]
		if r.State != want || r.End.Before(r.Start) || len(r.Steps) != 3 {
			t.Fatalf("record %+v, want %s with 3 steps", r, want)
		}
		s := r.Steps[1]
		if s.Stage != "base" || s.CacheMiss != "no earlier build of this step is recorded" || s.Lines != 3 {
			t.Errorf("step 2 = %+v", s)
		}
		if fail && (s.State != StepFailed || s.Error != "exit status 2" || !strings.Contains(r.Error, "RUN make")) {
			t.Errorf("failed build: record error %q, step %+v", r.Error, s)
		}
		if r.Steps[2].State != StepCached || r.Steps[2].Stage != "app" {
			t.Errorf("step 3 = %+v", r.Steps[2])
		}
		// The replay prints what the build printed live, byte for byte.
		events, err := Events(root, w.ID())
		if err != nil {
			t.Fatal(err)
		}
		var replay bytes.Buffer
		if err := progress.Replay(&replay, events); err != nil {
			t.Fatal(err)
		}
		if replay.String() != live {
			t.Errorf("replay =\n%s\nlive =\n%s", replay.String(), live)
		}
	}
}

// A record whose writer is gone without Finish (a SIGKILL) reads as
// unfinished, its running step too; one whose writer lives reads running.
func TestRecordUnfinished(t *testing.T) {
	root := t.TempDir()
	w, _ := runBuild(t, root, Limits{}, false)
	w.mu.Lock()
	w.flush()
	w.f.Close() // as the kernel does for a killed process: the flock goes
	w.mu.Unlock()
	r, err := Load(root, w.ID())
	if err != nil {
		t.Fatal(err)
	}
	if r.State != Unfinished {
		t.Errorf("state %s, want unfinished", r.State)
	}
	// A torn last line (killed mid-write) is left out, not an error.
	f, _ := os.OpenFile(filepath.Join(root, Dir, w.ID(), eventsFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"kind":"line","ti`)
	f.Close()
	if ev, err := Events(root, w.ID()); err != nil || len(ev) == 0 {
		t.Errorf("events after a torn write: %d, %v", len(ev), err)
	}
	if err := Remove(root, w.ID()); err != nil {
		t.Errorf("remove unfinished: %v", err)
	}
}

func TestRecordRunningIsKept(t *testing.T) {
	root := t.TempDir()
	w, _ := runBuild(t, root, Limits{}, false)
	if err := Remove(root, w.ID()); !errors.Is(err, ErrRunning) {
		t.Errorf("Remove of a running record: %v, want ErrRunning", err)
	}
	if c, err := Collect(root, Limits{}, true); err != nil || c.Records != 0 {
		t.Errorf("Collect all removed a running record: %+v %v", c, err)
	}
	w.Finish(Result{})
}

func TestCollectLimits(t *testing.T) {
	root := t.TempDir()
	var ids []string
	for range 5 {
		w, _ := runBuild(t, root, Limits{}, false)
		w.Finish(Result{})
		ids = append(ids, w.ID())
		time.Sleep(2 * time.Millisecond) // distinct start times
	}
	one, err := loadHead(root, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, Dir, tmpPrefix+"0abc"), 0o700) // a killed Start's leftover
	for _, tc := range []struct {
		l    Limits
		kept []string
	}{
		{Limits{Count: 4}, ids[1:]},
		{Limits{Bytes: 2*one.Size + one.Size/2}, ids[3:]},
		{Limits{Count: 1}, ids[4:]},
	} {
		if _, err := Collect(root, tc.l, false); err != nil {
			t.Fatal(err)
		}
		recs, _ := List(root, false)
		var got []string
		for _, r := range recs {
			got = append([]string{r.ID}, got...)
		}
		if strings.Join(got, ",") != strings.Join(tc.kept, ",") {
			t.Errorf("after Collect(%+v): %v, want %v", tc.l, got, tc.kept)
		}
	}
	if _, err := os.Stat(filepath.Join(root, Dir, tmpPrefix+"0abc")); !os.IsNotExist(err) {
		t.Errorf("leftover temporary record not collected: %v", err)
	}
}

func TestResolveHostile(t *testing.T) {
	root := t.TempDir()
	for _, id := range []string{"aaaa1111", "aaaa2222", "bbbb"} {
		w, err := Start(root, Record{ID: id}, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		w.Finish(Result{})
	}
	os.WriteFile(filepath.Join(root, "secret"), []byte("x"), 0o600)
	for _, tc := range []struct{ in, want, err string }{
		{"bbbb", "bbbb", ""},
		{"b", "bbbb", ""},
		{"aaaa1", "aaaa1111", ""},
		{"aaaa", "", "ambiguous"},
		{"cccc", "", "no such build record"},
		{"../secret", "", "no such build record"},
		{"", "", "no such build record"},
		{"AAAA", "", "no such build record"},
	} {
		got, err := Resolve(root, tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Resolve(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
	if _, err := Start(root, Record{ID: "../x"}, Limits{}); err == nil {
		t.Error("Start with ID ../x succeeded")
	}
	if _, err := Load(root, "../.."); err == nil {
		t.Error("Load(../..) succeeded")
	}
}

// Output beyond the log limit is dropped with one marker line per step.
func TestRecordLogLimit(t *testing.T) {
	root := t.TempDir()
	p := progress.New(nil, progress.Quiet)
	w, err := Start(root, Record{}, Limits{Bytes: 2000})
	if err != nil {
		t.Fatal(err)
	}
	p.AddObserver(w)
	s := p.Step("[x 1/1] RUN yes")
	line := strings.Repeat("y", 99) + "\n"
	for range 100 {
		s.Write([]byte(line))
	}
	s.Done()
	w.Finish(Result{})
	r, _ := Load(root, w.ID())
	if !r.LogTruncated || r.Steps[0].Lines != 11 || r.Size > 4000 {
		t.Errorf("truncated %v, %d lines, %d bytes; want truncated, 10 lines and a marker, about 2000 bytes", r.LogTruncated, r.Steps[0].Lines, r.Size)
	}
}

// The trace is Trace Event Format JSON: complete events with ts and dur
// in microseconds on one thread per stage, named by metadata events.
func TestTrace(t *testing.T) {
	root := t.TempDir()
	w, _ := runBuild(t, root, Limits{}, false)
	w.Finish(Result{})
	r, err := Load(root, w.ID())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.Trace(&buf); err != nil {
		t.Fatal(err)
	}
	var tr struct {
		TraceEvents []map[string]json.RawMessage `json:"traceEvents"`
	}
	if err := json.Unmarshal(buf.Bytes(), &tr); err != nil {
		t.Fatal(err)
	}
	threads := map[float64]string{}
	var slices []map[string]any
	for _, raw := range tr.TraceEvents {
		e := map[string]any{}
		for k, v := range raw {
			var x any
			json.Unmarshal(v, &x)
			e[k] = x
		}
		for _, k := range []string{"name", "ph", "pid", "tid"} {
			if _, ok := e[k]; !ok {
				t.Fatalf("event %v lacks %s", e, k)
			}
		}
		switch e["ph"] {
		case "M":
			if e["name"] == "thread_name" {
				threads[e["tid"].(float64)] = e["args"].(map[string]any)["name"].(string)
			}
		case "X":
			ts, ok1 := e["ts"].(float64)
			dur, ok2 := e["dur"].(float64)
			if !ok1 || !ok2 || ts < 0 || dur < 0 || ts != float64(int64(ts)) {
				t.Errorf("complete event %v: ts and dur must be whole non-negative microseconds", e)
			}
			slices = append(slices, e)
		default:
			t.Errorf("unexpected phase in %v", e)
		}
	}
	if len(slices) != 3 || len(threads) != 2 {
		t.Fatalf("%d slices on threads %v, want 3 on base and app", len(slices), threads)
	}
	for i, want := range []string{"base", "base", "app"} {
		if got := threads[slices[i]["tid"].(float64)]; got != want {
			t.Errorf("slice %q on track %q, want %q", slices[i]["name"], got, want)
		}
	}
	if slices[1]["args"].(map[string]any)["cacheMiss"] == nil {
		t.Errorf("slice of the missed step has no cacheMiss: %v", slices[1])
	}
}

package progress

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestJSON(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, JSON)
	p.Printf("note %d", 1)
	s := p.Step("[stage-0 1/2] RUN echo hi")
	s.Write([]byte("hi\npartial"))
	s.Done()
	c := p.Step("[stage-0 2/2] COPY a b")
	c.Cached()
	e := p.Step("[stage-0 3/3] RUN false")
	e.Error(errors.New("exit code 1"))
	p.Close()

	type ev struct {
		Step     int      `json:"step"`
		Name     string   `json:"name"`
		Status   string   `json:"status"`
		Line     string   `json:"line"`
		Time     string   `json:"time"`
		Duration *float64 `json:"duration"`
		Error    string   `json:"error"`
	}
	want := []ev{
		{Status: "info", Line: "note 1"},
		{Step: 1, Name: "[stage-0 1/2] RUN echo hi", Status: "started"},
		{Step: 1, Name: "[stage-0 1/2] RUN echo hi", Status: "output", Line: "hi"},
		{Step: 1, Name: "[stage-0 1/2] RUN echo hi", Status: "output", Line: "partial"},
		{Step: 1, Name: "[stage-0 1/2] RUN echo hi", Status: "done"},
		{Step: 2, Name: "[stage-0 2/2] COPY a b", Status: "started"},
		{Step: 2, Name: "[stage-0 2/2] COPY a b", Status: "cached"},
		{Step: 3, Name: "[stage-0 3/3] RUN false", Status: "started"},
		{Step: 3, Name: "[stage-0 3/3] RUN false", Status: "error", Error: "exit code 1"},
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d events, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, l := range lines {
		var got ev
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, l)
		}
		if _, err := time.Parse(time.RFC3339Nano, got.Time); err != nil {
			t.Errorf("line %d: time %q: %v", i, got.Time, err)
		}
		ends := got.Status == "done" || got.Status == "cached" || got.Status == "error"
		if ends != (got.Duration != nil) {
			t.Errorf("line %d: duration %v on status %s", i, got.Duration, got.Status)
		}
		got.Time, got.Duration = "", nil
		if got != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got, want[i])
		}
	}
}

func TestQuietKeepsTail(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, Quiet)
	s := p.Step("x")
	for i := 0; i < 30; i++ {
		s.Write([]byte("line\n"))
	}
	s.Write([]byte("last"))
	if tail := s.Tail(); len(tail) != tailLines || tail[len(tail)-1] != "last" {
		t.Errorf("tail = %q", tail)
	}
	s.Done()
	p.Printf("hidden")
	p.Close()
	if buf.Len() != 0 {
		t.Errorf("quiet progress printed %q", buf.String())
	}
}

func TestParseMode(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, c := range []struct {
		in   string
		want Mode
		err  bool
	}{
		{"auto", Plain, false}, // a pipe is no terminal
		{"", Plain, false},
		{"plain", Plain, false},
		{"tty", Plain, false}, // escape codes would garble the pipe
		{"rawjson", JSON, false},
		{"quiet", Quiet, false},
		{"fancy", "", true},
	} {
		got, err := ParseMode(c.in, w)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("ParseMode(%q) = %q, %v", c.in, got, err)
		}
	}
}

package progress

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"builder/build/progress/progresstest"
)

func TestRawJSON(t *testing.T) {
	run := func() []progresstest.SolveStatus {
		var buf bytes.Buffer
		p := New(&buf, RawJSON)
		p.Printf("WARNING: Dockerfile:1: something")
		s := p.Step("[1/3] RUN echo hi")
		s.Write([]byte("hi\npartial"))
		s.Done()
		p.StepAfter(s, "[2/3] COPY a b").Cached()
		p.Step("[3/3] RUN false").Error(errors.New("exit code 1"))
		p.Warning("FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)", "https://docs.docker.com/go/dockerfile/rule/from-as-casing/")
		tr := p.Transfer("pull sha256:0123456789ab", 100)
		tr.Add(100)
		tr.Done(nil)
		p.Close()
		st, err := progresstest.ReadRawJSON(&buf)
		if err != nil {
			t.Fatalf("%v\n%s", err, buf.String())
		}
		return st
	}
	st := run()
	g := progresstest.Collect(st)
	for _, c := range []struct {
		name          string
		cached, done  bool
		err, logs     string
		statusCurrent int64
	}{
		{name: "WARNING: Dockerfile:1: something", done: true},
		{name: "[1/3] RUN echo hi", done: true, logs: "hi\npartial\n"},
		{name: "[2/3] COPY a b", done: true, cached: true},
		{name: "[3/3] RUN false", done: true, err: "exit code 1"},
		{name: "pull sha256:0123456789ab", done: true, statusCurrent: 100},
	} {
		v := g.ByName(c.name)
		if v == nil {
			t.Errorf("no vertex %q in %+v", c.name, g.Order)
			continue
		}
		if v.Started == nil || (v.Completed != nil) != c.done || v.Cached != c.cached || v.Error != c.err {
			t.Errorf("vertex %q: %+v", c.name, v.Vertex)
		}
		if got := g.Logs[v.Digest]; got != c.logs {
			t.Errorf("vertex %q logs %q, want %q", c.name, got, c.logs)
		}
		if c.statusCurrent != 0 {
			s := g.Statuses[v.Digest]
			if s == nil || s.Current != c.statusCurrent || s.Total != 100 || s.Completed == nil {
				t.Errorf("vertex %q status %+v", c.name, s)
			}
		}
	}
	if c, r := g.ByName("[2/3] COPY a b"), g.ByName("[1/3] RUN echo hi"); c == nil || r == nil || len(c.Inputs) != 1 || c.Inputs[0] != r.Digest {
		t.Errorf("the COPY's inputs are not the RUN before it")
	}
	if len(g.Warnings) != 2 || string(g.Warnings[0].Short) != "Dockerfile:1: something" ||
		string(g.Warnings[1].Short) != "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)" ||
		g.Warnings[1].URL != "https://docs.docker.com/go/dockerfile/rule/from-as-casing/" {
		t.Errorf("warnings %+v", g.Warnings)
	}
	// The same steps get the same digests in another run.
	g2 := progresstest.Collect(run())
	if strings.Join(g.Order, ",") != strings.Join(g2.Order, ",") {
		t.Errorf("digests differ between runs:\n%v\n%v", g.Order, g2.Order)
	}
}

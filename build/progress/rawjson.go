package progress

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// The rawjson mode writes what buildx writes for --progress=rawjson: one
// BuildKit SolveStatus object per line (github.com/moby/buildkit/client,
// graph.go), each holding only what changed. The types below are that
// schema, field for field, without BuildKit's client package and its
// dependencies. A step is a vertex; its output lines are logs of stream 1;
// a transfer is a vertex of its own with one status; a message outside any
// step is a vertex that starts and completes at once, and a message that
// starts with "WARNING: " is also a warning.

// solveStatus is one line of rawjson.
type solveStatus struct {
	Vertexes []*vertex        `json:"vertexes,omitempty"`
	Statuses []*vertexStatus  `json:"statuses,omitempty"`
	Logs     []*vertexLog     `json:"logs,omitempty"`
	Warnings []*vertexWarning `json:"warnings,omitempty"`
}

type vertex struct {
	Digest    string     `json:"digest,omitempty"`
	Inputs    []string   `json:"inputs,omitempty"`
	Name      string     `json:"name,omitempty"`
	Started   *time.Time `json:"started,omitempty"`
	Completed *time.Time `json:"completed,omitempty"`
	Cached    bool       `json:"cached,omitempty"`
	Error     string     `json:"error,omitempty"`
}

type vertexStatus struct {
	ID        string     `json:"id"`
	Vertex    string     `json:"vertex,omitempty"`
	Name      string     `json:"name,omitempty"`
	Total     int64      `json:"total,omitempty"`
	Current   int64      `json:"current"`
	Timestamp time.Time  `json:"timestamp"`
	Started   *time.Time `json:"started,omitempty"`
	Completed *time.Time `json:"completed,omitempty"`
}

type vertexLog struct {
	Vertex    string    `json:"vertex,omitempty"`
	Stream    int       `json:"stream,omitempty"`
	Data      []byte    `json:"data"` // base64 in JSON, as BuildKit's
	Timestamp time.Time `json:"timestamp"`
}

type vertexWarning struct {
	Vertex string `json:"vertex,omitempty"`
	Level  int    `json:"level,omitempty"`
	Short  []byte `json:"short,omitempty"`
	URL    string `json:"url,omitempty"`
}

// rawJSONRenderer prints SolveStatus lines. Vertex digests are derived from
// the step's name (and how many earlier vertexes had the same name), so the
// same step of the same Dockerfile has the same digest in every build.
type rawJSONRenderer struct {
	enc    *json.Encoder
	names  map[string]int   // vertexes so far by name
	steps  map[*Step]string // digest of each step (kept: later steps name it as input)
	moving map[*Transfer]string
}

func newRawJSONRenderer(enc *json.Encoder) *rawJSONRenderer {
	return &rawJSONRenderer{enc: enc, names: map[string]int{}, steps: map[*Step]string{}, moving: map[*Transfer]string{}}
}

// digest returns a new vertex digest for name.
func (r *rawJSONRenderer) digest(name string) string {
	n := r.names[name]
	r.names[name] = n + 1
	h := sha256.Sum256([]byte("builder.progress.vertex.v1\x00" + name + "\x00" + strconv.Itoa(n)))
	return "sha256:" + hex.EncodeToString(h[:])
}

func (r *rawJSONRenderer) emit(s solveStatus) { _ = r.enc.Encode(s) }

func utc(t time.Time) *time.Time { t = t.UTC(); return &t }

func (r *rawJSONRenderer) message(now time.Time, text string) {
	v := &vertex{Digest: r.digest(text), Name: text, Started: utc(now), Completed: utc(now)}
	s := solveStatus{Vertexes: []*vertex{v}}
	if short, ok := strings.CutPrefix(text, "WARNING: "); ok {
		s.Warnings = []*vertexWarning{{Vertex: v.Digest, Level: 1, Short: []byte(short)}}
	}
	r.emit(s)
}

func (r *rawJSONRenderer) warning(_ time.Time, short, url string) {
	r.emit(solveStatus{Warnings: []*vertexWarning{{Level: 1, Short: []byte(short), URL: url}}})
}

func (r *rawJSONRenderer) start(s *Step) {
	d := r.digest(s.name)
	r.steps[s] = d
	r.emit(solveStatus{Vertexes: []*vertex{{Digest: d, Inputs: r.inputs(s), Name: s.name, Started: utc(s.start)}}})
}

// inputs lists the digest of the step s comes after, if any.
func (r *rawJSONRenderer) inputs(s *Step) []string {
	if d, ok := r.steps[s.after]; ok && s.after != nil {
		return []string{d}
	}
	return nil
}

func (r *rawJSONRenderer) line(s *Step, now time.Time, text string) {
	r.emit(solveStatus{Logs: []*vertexLog{{Vertex: r.steps[s], Stream: 1, Data: []byte(text + "\n"), Timestamp: now.UTC()}}})
}

func (r *rawJSONRenderer) end(s *Step, now time.Time) {
	v := &vertex{Digest: r.steps[s], Inputs: r.inputs(s), Name: s.name, Started: utc(s.start), Completed: utc(now)}
	switch s.state {
	case stepCached:
		v.Cached = true
	case stepError:
		v.Error = s.err
	}
	r.emit(solveStatus{Vertexes: []*vertex{v}})
}

func (r *rawJSONRenderer) close(time.Time) {}

func (r *rawJSONRenderer) transferStart(t *Transfer) {
	d := r.digest(t.label)
	r.moving[t] = d
	r.emit(solveStatus{
		Vertexes: []*vertex{{Digest: d, Name: t.label, Started: utc(t.start)}},
		Statuses: []*vertexStatus{{ID: t.label, Vertex: d, Name: t.label, Total: t.total, Timestamp: t.start.UTC(), Started: utc(t.start)}},
	})
}

func (r *rawJSONRenderer) transferEnd(t *Transfer, now time.Time) {
	d := r.moving[t]
	delete(r.moving, t)
	v := &vertex{Digest: d, Name: t.label, Started: utc(t.start), Completed: utc(now)}
	if t.err != nil {
		v.Error = t.err.Error()
	}
	r.emit(solveStatus{
		Vertexes: []*vertex{v},
		Statuses: []*vertexStatus{{ID: t.label, Vertex: d, Name: t.label, Total: t.total, Current: t.Moved(),
			Timestamp: now.UTC(), Started: utc(t.start), Completed: utc(now)}},
	})
}

package progresstest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// The types below are BuildKit's published rawjson schema (the JSON of
// github.com/moby/buildkit/client.SolveStatus), written from its field
// list and tags, independently of package progress, so that tests read
// builder's rawjson the way buildx's consumers do.

// SolveStatus is one line of rawjson.
type SolveStatus struct {
	Vertexes []*Vertex        `json:"vertexes,omitempty"`
	Statuses []*VertexStatus  `json:"statuses,omitempty"`
	Logs     []*VertexLog     `json:"logs,omitempty"`
	Warnings []*VertexWarning `json:"warnings,omitempty"`
}

// Vertex is a step of the build graph.
type Vertex struct {
	Digest        string          `json:"digest,omitempty"`
	Inputs        []string        `json:"inputs,omitempty"`
	Name          string          `json:"name,omitempty"`
	Started       *time.Time      `json:"started,omitempty"`
	Completed     *time.Time      `json:"completed,omitempty"`
	Cached        bool            `json:"cached,omitempty"`
	Error         string          `json:"error,omitempty"`
	ProgressGroup json.RawMessage `json:"progressGroup,omitempty"`
}

// VertexStatus is the progress of one transfer or task of a vertex.
type VertexStatus struct {
	ID        string     `json:"id"`
	Vertex    string     `json:"vertex,omitempty"`
	Name      string     `json:"name,omitempty"`
	Total     int64      `json:"total,omitempty"`
	Current   int64      `json:"current"`
	Timestamp time.Time  `json:"timestamp"`
	Started   *time.Time `json:"started,omitempty"`
	Completed *time.Time `json:"completed,omitempty"`
}

// VertexLog is output of a vertex; Data is base64 in the JSON.
type VertexLog struct {
	Vertex    string    `json:"vertex,omitempty"`
	Stream    int       `json:"stream,omitempty"`
	Data      []byte    `json:"data"`
	Timestamp time.Time `json:"timestamp"`
}

// VertexWarning is a warning about a vertex.
type VertexWarning struct {
	Vertex     string          `json:"vertex,omitempty"`
	Level      int             `json:"level,omitempty"`
	Short      []byte          `json:"short,omitempty"`
	Detail     [][]byte        `json:"detail,omitempty"`
	URL        string          `json:"url,omitempty"`
	SourceInfo json.RawMessage `json:"sourceInfo,omitempty"`
	Range      json.RawMessage `json:"range,omitempty"`
}

// ReadRawJSON reads a rawjson stream: one SolveStatus per line, each with
// only fields of the schema, every vertex, status and log naming a digest.
func ReadRawJSON(r io.Reader) ([]SolveStatus, error) {
	var out []SolveStatus
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var s SolveStatus
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("rawjson line %d: %w: %s", n, err, sc.Text())
		}
		if len(s.Vertexes)+len(s.Statuses)+len(s.Logs)+len(s.Warnings) == 0 {
			return nil, fmt.Errorf("rawjson line %d is empty: %s", n, sc.Text())
		}
		for _, v := range s.Vertexes {
			if !strings.HasPrefix(v.Digest, "sha256:") || len(v.Digest) != 71 {
				return nil, fmt.Errorf("rawjson line %d: vertex digest %q", n, v.Digest)
			}
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// Graph is the state of every vertex after a whole rawjson stream, as a
// progress display would end up showing it.
type Graph struct {
	Order    []string // vertex digests, first seen first
	Vertexes map[string]*GraphVertex
	Logs     map[string]string // decoded output by vertex
	Statuses map[string]*VertexStatus
	Warnings []*VertexWarning
}

// GraphVertex is a vertex's latest state.
type GraphVertex struct{ Vertex }

// Collect merges a stream's updates: a vertex's later updates replace it.
func Collect(st []SolveStatus) *Graph {
	g := &Graph{Vertexes: map[string]*GraphVertex{}, Logs: map[string]string{}, Statuses: map[string]*VertexStatus{}}
	for _, s := range st {
		for _, v := range s.Vertexes {
			if _, ok := g.Vertexes[v.Digest]; !ok {
				g.Order = append(g.Order, v.Digest)
			}
			g.Vertexes[v.Digest] = &GraphVertex{*v}
		}
		for _, l := range s.Logs {
			g.Logs[l.Vertex] += string(l.Data)
		}
		for _, x := range s.Statuses {
			g.Statuses[x.Vertex] = x
		}
		g.Warnings = append(g.Warnings, s.Warnings...)
	}
	return g
}

// ByName returns the vertex named name, or nil.
func (g *Graph) ByName(name string) *GraphVertex {
	for _, d := range g.Order {
		if v := g.Vertexes[d]; v.Name == name {
			return v
		}
	}
	return nil
}

// Find returns the first vertex whose name contains s, or nil.
func (g *Graph) Find(s string) *GraphVertex {
	for _, d := range g.Order {
		if v := g.Vertexes[d]; strings.Contains(v.Name, s) {
			return v
		}
	}
	return nil
}

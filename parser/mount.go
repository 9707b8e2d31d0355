package parser

import (
	"encoding/csv"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// ParseMount parses one RUN --mount value (RunMount.Spec) with BuildKit's
// rules. expand is applied to every key=value value before it is
// interpreted, as BuildKit does at build time (keys are never expanded);
// pass nil to keep values as written. The result's Spec is spec. Errors are
// BuildKit's messages, unwrapped, for the caller to place.
func ParseMount(spec string, expand func(string) (string, error)) (*RunMount, error) {
	if expand == nil {
		expand = func(s string) (string, error) { return s, nil }
	}
	// instructions has no exported mount parser, so parse a one-flag RUN and
	// let RunCommand.Expand re-read the mount with the expander.
	node := &bkparser.Node{
		Value:    "run",
		Original: "RUN --mount=" + spec + " true",
		Flags:    []string{"--mount=" + spec},
		Next:     &bkparser.Node{Value: "true"},
	}
	v, err := instructions.ParseInstruction(node)
	if err != nil {
		return nil, unlocate(err)
	}
	run, ok := v.(*instructions.RunCommand)
	if !ok {
		return nil, fmt.Errorf("parse mount: unexpected %T", v)
	}
	if err := run.Expand(instructions.SingleWordExpander(expand)); err != nil {
		return nil, unlocate(err)
	}
	ms := instructions.GetMounts(run)
	if len(ms) != 1 {
		return nil, fmt.Errorf("parse mount: got %d mounts for one --mount", len(ms))
	}
	return convertMount(spec, ms[0]), nil
}

// convertMount copies a BuildKit mount into a RunMount.
func convertMount(spec string, m *instructions.Mount) *RunMount {
	rm := &RunMount{
		Spec:     spec,
		Type:     string(m.Type),
		From:     m.From,
		Source:   m.Source,
		Target:   m.Target,
		ReadOnly: m.ReadOnly,
		ID:       m.CacheID,
		Sharing:  string(m.CacheSharing),
		Mode:     m.Mode,
		UID:      m.UID,
		GID:      m.GID,
		Required: m.Required,
		Size:     m.SizeLimit,
	}
	if m.Env != nil {
		rm.Env = *m.Env
	}
	return rm
}

// parseMounts parses the raw --mount values of a RUN at parse time. A value
// that fails to parse is an error unless it uses a variable, in which case
// BuildKit only finds out at build time: the mount is kept with just its
// Spec, its From and an empty Type.
func parseMounts(specs []string) ([]*RunMount, error) {
	var out []*RunMount
	for _, spec := range specs {
		m, err := ParseMount(spec, nil)
		if err != nil {
			if strings.Contains(spec, "$") {
				out = append(out, &RunMount{Spec: spec, From: mountFrom(spec)})
				continue
			}
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// mountFrom returns the from= value of a mount spec, which never needs
// expansion (BuildKit rejects variables in it), or "".
func mountFrom(spec string) string {
	r := csv.NewReader(strings.NewReader(spec))
	r.LazyQuotes = true
	fields, err := r.Read()
	if err != nil {
		return ""
	}
	from := ""
	for _, f := range fields {
		if k, v, ok := strings.Cut(f, "="); ok && strings.ToLower(k) == "from" {
			from = v
		}
	}
	return from
}

// unlocate strips BuildKit's location wrapper from err.
func unlocate(err error) error {
	var le *bkparser.LocationError
	if errors.As(err, &le) && le.Unwrap() != nil {
		return le.Unwrap()
	}
	return err
}

package attest

import (
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// In-toto and predicate type URIs.
const (
	StatementType      = "https://in-toto.io/Statement/v0.1"
	PredicateSLSA1     = "https://slsa.dev/provenance/v1"
	PredicateSPDX      = "https://spdx.dev/Document"
	MediaTypeInToto    = "application/vnd.in-toto+json"
	AnnotationPredType = "in-toto.io/predicate-type"
)

// Statement is an in-toto statement; Predicate is the raw JSON of its
// predicate.
type Statement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Subject       []Subject       `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

// Subject names an artifact a statement is about.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// DigestSet is a hash as in-toto spells it: {"sha256": "<hex>"}.
func DigestSet(h v1.Hash) map[string]string {
	return map[string]string{h.Algorithm: h.Hex}
}

// Subjects names the image with manifest digest d by each of names as a
// package URL (pkg:docker/NAME@TAG?platform=OS%2FARCH), as BuildKit's
// image exporter does; without names the subject has an empty name.
func Subjects(names []string, p v1.Platform, d v1.Hash) ([]Subject, error) {
	if len(names) == 0 {
		return []Subject{{Name: "", Digest: DigestSet(d)}}, nil
	}
	var out []Subject
	for _, n := range names {
		u, err := ImagePURL(PURLDocker, n, &p)
		if err != nil {
			return nil, err
		}
		out = append(out, Subject{Name: u, Digest: DigestSet(d)})
	}
	return out, nil
}

// NewStatement wraps predicate (marshalled as JSON) in a statement about
// subjects.
func NewStatement(predicateType string, subjects []Subject, predicate any) (*Statement, error) {
	raw, ok := predicate.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(predicate); err != nil {
			return nil, fmt.Errorf("encode %s predicate: %w", predicateType, err)
		}
	}
	return &Statement{Type: StatementType, PredicateType: predicateType, Subject: subjects, Predicate: raw}, nil
}

package attest

import (
	"bytes"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// MaxStatementSize bounds one statement read back from a store or a
// registry: SBOMs of large images run to a few MB.
const MaxStatementSize = 64 << 20

// ReadStatements returns the in-toto statements of the attestation
// manifest raw, reading each layer with blob (which must refuse more than
// MaxStatementSize bytes). Layers of other media types are skipped, as the
// attestation storage format says.
func ReadStatements(raw []byte, blob func(desc v1.Descriptor) ([]byte, error)) ([]*Statement, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse attestation manifest: %w", err)
	}
	var out []*Statement
	for _, l := range m.Layers {
		if string(l.MediaType) != MediaTypeInToto {
			continue
		}
		if l.Size > MaxStatementSize {
			return nil, fmt.Errorf("attestation %s: %d bytes, more than %d", l.Digest, l.Size, MaxStatementSize)
		}
		b, err := blob(l)
		if err != nil {
			return nil, fmt.Errorf("attestation %s: %w", l.Digest, err)
		}
		if d, _, err := v1.SHA256(bytes.NewReader(b)); err != nil || d != l.Digest {
			return nil, fmt.Errorf("attestation %s: content does not match its digest", l.Digest)
		}
		var s Statement
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("attestation %s: %w", l.Digest, err)
		}
		out = append(out, &s)
	}
	return out, nil
}

// LoadBundle reads back the attestation manifest desc describes, and every
// blob it names, with blob (which bounds what it reads), so that it can
// be pushed again.
func LoadBundle(desc v1.Descriptor, blob func(v1.Hash) ([]byte, error)) (*Bundle, error) {
	raw, err := blob(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("attestation manifest %s: %w", desc.Digest, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("attestation manifest %s: %w", desc.Digest, err)
	}
	b := &Bundle{Manifest: raw, Descriptor: desc, Blobs: map[v1.Hash][]byte{}}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if b.Blobs[d.Digest], err = blob(d.Digest); err != nil {
			return nil, fmt.Errorf("attestation manifest %s: %w", desc.Digest, err)
		}
	}
	return b, nil
}

// Referrer reports whether the attestation manifest of b is an OCI 1.1
// referrer (has a subject).
func (b *Bundle) Referrer() bool {
	var m struct {
		Subject *v1.Descriptor `json:"subject"`
	}
	return json.Unmarshal(b.Manifest, &m) == nil && m.Subject != nil
}

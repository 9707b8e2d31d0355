package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/attest"
)

// attestationsInfo is what `builder inspect --attestations` shows: every
// statement, and the predicates of the provenance and the SBOMs, as
// `docker buildx imagetools inspect --format` names them.
type attestationsInfo struct {
	Name       string              `json:"Name"`
	Digest     string              `json:"Digest"` // the image manifest the statements are about
	Provenance json.RawMessage     `json:"Provenance,omitempty"`
	SBOM       []json.RawMessage   `json:"SBOM,omitempty"`
	Statements []*attest.Statement `json:"Statements"`
}

func (a *attestationsInfo) add(stmts []*attest.Statement) {
	for _, s := range stmts {
		if a.seen(s) {
			continue
		}
		a.Statements = append(a.Statements, s)
		switch s.PredicateType {
		case attest.PredicateSLSA1:
			a.Provenance = s.Predicate
		case attest.PredicateSPDX:
			a.SBOM = append(a.SBOM, s.Predicate)
		}
	}
}

// seen reports whether an equal statement is listed already (the index
// entry and the referrer are one manifest with the same statements).
func (a *attestationsInfo) seen(s *attest.Statement) bool {
	b, _ := json.Marshal(s)
	for _, t := range a.Statements {
		if c, _ := json.Marshal(t); string(c) == string(b) {
			return true
		}
	}
	return false
}

// inspectAttestations collects the attestations of a local image (the
// attestation manifests the store keeps next to it) or, with docker://,
// of an image in a registry (the attestation manifests of its index and
// its OCI referrers).
func (g *globals) inspectAttestations(ctx context.Context, ref string, insecure []string) (*attestationsInfo, error) {
	if r, ok := strings.CutPrefix(ref, "docker://"); ok {
		return g.remoteAttestations(ctx, r, insecure)
	}
	s, idx, err := g.openStore()
	if err != nil {
		return nil, err
	}
	r, err := resolveImage(idx, ref)
	if err != nil {
		return nil, err
	}
	d := r.Desc.Digest
	ai := &attestationsInfo{Name: ref, Digest: d.String(), Statements: []*attest.Statement{}}
	descs, err := idx.Attestations(d)
	if err != nil {
		return nil, err
	}
	for _, a := range descs {
		raw, err := s.ReadBlob(a.Digest, attest.MaxStatementSize)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: attestation manifest: %w", ref, err)
		}
		stmts, err := attest.ReadStatements(raw, func(l v1.Descriptor) ([]byte, error) {
			return s.ReadBlob(l.Digest, attest.MaxStatementSize)
		})
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", ref, err)
		}
		ai.add(stmts)
	}
	return ai, nil
}

// remoteAttestations reads the attestations of the host platform's image
// of ref from its registry.
func (g *globals) remoteAttestations(ctx context.Context, ref string, insecure []string) (*attestationsInfo, error) {
	rc, r, img, err := g.remoteImage(ctx, ref, insecure)
	if err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, &remoteError{ref: ref, err: err}
	}
	ai := &attestationsInfo{Name: "docker://" + ref, Digest: d.String(), Statements: []*attest.Statement{}}
	repo := r.Context()
	var manifests []v1.Descriptor
	if desc, err := rc.Get(ctx, r); err == nil && desc.MediaType.IsIndex() {
		if im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest)); err == nil {
			for _, m := range im.Manifests {
				if attest.IsAttestation(m) && m.Annotations[attest.AnnotationReferenceDigest] == d.String() {
					manifests = append(manifests, m)
				}
			}
		}
	}
	refs, err := rc.Referrers(ctx, repo.Digest(d.String()))
	if err != nil {
		return nil, &remoteError{ref: ref, err: err}
	}
	if im, err := refs.IndexManifest(); err == nil {
		for _, m := range im.Manifests {
			if m.ArtifactType == attest.ArtifactType {
				manifests = append(manifests, m)
			}
		}
	}
	blob := func(l v1.Descriptor) ([]byte, error) {
		rc2, err := rc.OpenBlob(ctx, repo, l.Digest)
		if err != nil {
			return nil, err
		}
		defer rc2.Close()
		return io.ReadAll(io.LimitReader(rc2, attest.MaxStatementSize+1))
	}
	for _, m := range manifests {
		desc, err := rc.Get(ctx, repo.Digest(m.Digest.String()))
		if err != nil {
			return nil, &remoteError{ref: ref, err: err}
		}
		stmts, err := attest.ReadStatements(desc.Manifest, blob)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", ref, err)
		}
		ai.add(stmts)
	}
	return ai, nil
}

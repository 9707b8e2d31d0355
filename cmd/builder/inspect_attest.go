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
	"builder/export"
)

// attestationsInfo is what `builder inspect --attestations` shows: every
// statement, and the predicates of the provenance and the SBOMs, as
// `docker buildx imagetools inspect --format` names them. For an index of
// several platforms' images, as buildx shows one, .Provenance and .SBOM
// map each platform to its image's, and Platforms has each image's
// attestations; .Statements are all of them.
type attestationsInfo struct {
	Name string `json:"Name,omitempty"`
	// Digest is the manifest the statements are about, or the index.
	Digest     string                       `json:"Digest"`
	Platform   string                       `json:"Platform,omitempty"`
	Provenance json.RawMessage              `json:"Provenance,omitempty"`
	SBOM       any                          `json:"SBOM,omitempty"` // []json.RawMessage, or by platform
	Statements []*attest.Statement          `json:"Statements"`
	Platforms  map[string]*attestationsInfo `json:"Platforms,omitempty"`
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
			sb, _ := a.SBOM.([]json.RawMessage)
			a.SBOM = append(sb, s.Predicate)
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

// maxAttestationManifests bounds the attestation manifests inspect reads
// about one image (each statement up to attest.MaxStatementSize): a
// hostile index or registry could list thousands.
const maxAttestationManifests = 16

// attestedImage is one image of what inspect reads, with the attestation
// manifests found about it.
type attestedImage struct {
	platform  string
	digest    v1.Hash
	manifests []v1.Hash
}

// collect fills an attestationsInfo named name about top (an image
// manifest, or an index of images) from images, reading each attestation
// manifest with manifest and its statements with blob.
func collect(name string, top v1.Hash, images []*attestedImage, manifest func(v1.Hash) ([]byte, error), blob func(v1.Descriptor) ([]byte, error)) (*attestationsInfo, error) {
	ai := &attestationsInfo{Name: name, Digest: top.String(), Statements: []*attest.Statement{}}
	if len(images) == 1 {
		ai.Digest = images[0].digest.String()
	}
	var prov map[string]json.RawMessage
	var sboms map[string][]json.RawMessage
	if len(images) > 1 {
		ai.Platforms, prov, sboms = map[string]*attestationsInfo{}, map[string]json.RawMessage{}, map[string][]json.RawMessage{}
	}
	for _, im := range images {
		pi := &attestationsInfo{Digest: im.digest.String(), Platform: im.platform, Statements: []*attest.Statement{}}
		if len(im.manifests) > maxAttestationManifests {
			return nil, fmt.Errorf("inspect %s: %d attestation manifests about %s, more than %d", name, len(im.manifests), im.digest, maxAttestationManifests)
		}
		for _, m := range im.manifests {
			raw, err := manifest(m)
			if err != nil {
				return nil, fmt.Errorf("inspect %s: attestation manifest %s: %w", name, m, err)
			}
			stmts, err := attest.ReadStatements(raw, blob)
			if err != nil {
				return nil, fmt.Errorf("inspect %s: %w", name, err)
			}
			pi.add(stmts)
		}
		if len(images) == 1 {
			ai.Provenance, ai.SBOM, ai.Statements = pi.Provenance, pi.SBOM, pi.Statements
			break
		}
		ai.Platforms[im.platform] = pi
		ai.Statements = append(ai.Statements, pi.Statements...)
		if pi.Provenance != nil {
			prov[im.platform] = pi.Provenance
		}
		if sb, ok := pi.SBOM.([]json.RawMessage); ok {
			sboms[im.platform] = sb
		}
	}
	if len(prov) > 0 {
		ai.Provenance, _ = json.Marshal(prov)
	}
	if len(sboms) > 0 {
		ai.SBOM = sboms
	}
	return ai, nil
}

// indexImages lists the images of the index raw with the attestation
// manifests it holds about each (BuildKit's layout).
func indexImages(raw []byte) ([]*attestedImage, error) {
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	var out []*attestedImage
	byDigest := map[string]*attestedImage{}
	for _, m := range im.Manifests {
		if attest.IsAttestation(m) || m.Platform == nil || m.Platform.OS == "unknown" || !m.MediaType.IsImage() {
			continue
		}
		a := &attestedImage{platform: export.PlatformString(*m.Platform), digest: m.Digest}
		out = append(out, a)
		byDigest[m.Digest.String()] = a
	}
	for _, m := range im.Manifests {
		if a := byDigest[m.Annotations[attest.AnnotationReferenceDigest]]; a != nil && attest.IsAttestation(m) {
			a.manifests = append(a.manifests, m.Digest)
		}
	}
	return out, nil
}

// inspectAttestations collects the attestations of a local image (the
// attestation manifests the store keeps next to it, or in its index) or,
// with docker://, of an image in a registry (the attestation manifests of
// its index and its OCI referrers); for a multi-platform image, of each
// platform's image.
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
	images := []*attestedImage{{digest: d}}
	if r.Desc.MediaType.IsIndex() {
		raw, err := s.ReadBlob(d, attest.MaxStatementSize)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", ref, err)
		}
		if images, err = indexImages(raw); err != nil {
			return nil, fmt.Errorf("inspect %s: %w", ref, err)
		}
	}
	// Attestations kept next to an image are those of this image, or of
	// this index's images (attestations of another index of the same image
	// are that index's).
	parent := ""
	if r.Desc.MediaType.IsIndex() {
		parent = d.String()
	}
	for _, im := range images {
		descs, err := idx.Attestations(im.digest)
		if err != nil {
			return nil, err
		}
		for _, a := range descs {
			if a.Annotations[export.AnnotationAttestIndex] == parent {
				im.manifests = append(im.manifests, a.Digest)
			}
		}
	}
	return collect(ref, d, images,
		func(h v1.Hash) ([]byte, error) { return s.ReadBlob(h, attest.MaxStatementSize) },
		func(l v1.Descriptor) ([]byte, error) { return s.ReadBlob(l.Digest, attest.MaxStatementSize) })
}

// remoteAttestations reads the attestations of ref from its registry: of
// its image, or of each platform's image of its index.
func (g *globals) remoteAttestations(ctx context.Context, ref string, insecure []string) (*attestationsInfo, error) {
	rc, err := g.registryClient(insecure)
	if err != nil {
		return nil, err
	}
	r, err := rc.ParseReference(ref)
	if err != nil {
		return nil, usagef("docker://%s: %w", ref, err)
	}
	desc, err := rc.Get(ctx, r)
	if err != nil {
		return nil, &remoteError{ref: ref, err: err}
	}
	images := []*attestedImage{{digest: desc.Digest}}
	if desc.MediaType.IsIndex() {
		if images, err = indexImages(desc.Manifest); err != nil {
			return nil, &remoteError{ref: ref, err: err}
		}
	}
	repo := r.Context()
	for _, im := range images {
		refs, err := rc.Referrers(ctx, repo.Digest(im.digest.String()))
		if err != nil {
			return nil, &remoteError{ref: ref, err: err}
		}
		rim, err := refs.IndexManifest()
		if err != nil {
			return nil, &remoteError{ref: ref, err: err}
		}
		for _, m := range rim.Manifests {
			if m.ArtifactType == attest.ArtifactType {
				im.manifests = append(im.manifests, m.Digest)
			}
		}
	}
	manifest := func(h v1.Hash) ([]byte, error) {
		d, err := rc.Get(ctx, repo.Digest(h.String()))
		if err != nil {
			return nil, err
		}
		return d.Manifest, nil
	}
	blob := func(l v1.Descriptor) ([]byte, error) {
		rc2, err := rc.OpenBlob(ctx, repo, l.Digest)
		if err != nil {
			return nil, err
		}
		defer rc2.Close()
		return io.ReadAll(io.LimitReader(rc2, attest.MaxStatementSize+1))
	}
	return collect("docker://"+ref, desc.Digest, images, manifest, blob)
}

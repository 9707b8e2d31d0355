package imagediff

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"builder/build/attest"
	"builder/export"
)

// AttestationRemote is a Remote that also reads what is attached to an
// image in a registry: the manifest a reference names, the OCI 1.1
// referrers of a manifest and blobs. The CLI's *registry.Client is one.
type AttestationRemote interface {
	Remote
	Get(ctx context.Context, ref name.Reference) (*remote.Descriptor, error)
	Referrers(ctx context.Context, d name.Digest) (v1.ImageIndex, error)
	OpenBlob(ctx context.Context, repo name.Repository, d v1.Hash) (io.ReadCloser, error)
}

// Attestations returns the in-toto statements attached to the opened
// image, as builder and BuildKit attach them: the attestation manifests
// about it in the index it was picked from (annotated
// vnd.docker.reference.digest), its OCI 1.1 referrers (a registry's, or
// those an OCI layout's index.json lists) and, in the local store, those
// kept next to it. A docker archive carries none. Call it before Close.
func (s *Source) Attestations(ctx context.Context) ([]*attest.Statement, error) {
	if s.attest == nil {
		return nil, nil
	}
	stmts, err := s.attest(ctx)
	if err != nil {
		return nil, fmt.Errorf("attestations of %s: %w", s.Name, err)
	}
	return stmts, nil
}

// maxAttestationManifests bounds the attestation manifests read about one
// image (each statement up to attest.MaxStatementSize): an image has one
// per build and store; a hostile index or registry could list thousands.
const maxAttestationManifests = 16

// attestReader collects the attestation manifests about image d listed in
// the indexes ims (annotated with d, or artifacts whose subject is d) and
// reads their statements with manifest and blob, each manifest once.
type attestReader struct {
	manifest func(v1.Hash) ([]byte, error)
	blob     func(v1.Hash) ([]byte, error)
	seen     map[v1.Hash]bool
	out      []*attest.Statement
}

func newAttestReader(manifest, blob func(v1.Hash) ([]byte, error)) *attestReader {
	return &attestReader{manifest: manifest, blob: blob, seen: map[v1.Hash]bool{}}
}

// fromIndex reads the attestation manifests about d that index im lists:
// entries annotated with d and, with referrers set, artifacts of
// BuildKit's attestation type whose subject is d.
func (r *attestReader) fromIndex(im *v1.IndexManifest, d v1.Hash, referrers bool) error {
	for _, m := range im.Manifests {
		switch {
		case attest.IsAttestation(m) && m.Annotations[attest.AnnotationReferenceDigest] == d.String():
			if err := r.read(m.Digest, v1.Hash{}); err != nil {
				return err
			}
		case referrers && m.ArtifactType == attest.ArtifactType:
			if err := r.read(m.Digest, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// read reads the statements of attestation manifest m; a non-zero
// subject skips it unless its subject is that.
func (r *attestReader) read(m v1.Hash, subject v1.Hash) error {
	if r.seen[m] {
		return nil
	}
	if len(r.seen) == maxAttestationManifests {
		return fmt.Errorf("more than %d attestation manifests", maxAttestationManifests)
	}
	r.seen[m] = true
	raw, err := r.manifest(m)
	if err != nil {
		return fmt.Errorf("attestation manifest %s: %w", m, err)
	}
	if subject != (v1.Hash{}) {
		var probe struct {
			Subject *v1.Descriptor `json:"subject"`
		}
		if json.Unmarshal(raw, &probe) != nil || probe.Subject == nil || probe.Subject.Digest != subject {
			return nil
		}
	}
	stmts, err := attest.ReadStatements(raw, func(l v1.Descriptor) ([]byte, error) { return r.blob(l.Digest) })
	if err != nil {
		return err
	}
	r.out = append(r.out, stmts...)
	return nil
}

// storeAttestations finds the attestations of the stored image d, picked
// out of the stored index top (zero for a single image).
func storeAttestations(o OpenOptions, top, d v1.Hash) func(context.Context) ([]*attest.Statement, error) {
	return func(context.Context) ([]*attest.Statement, error) {
		read := func(h v1.Hash) ([]byte, error) { return o.Store.ReadBlob(h, attest.MaxStatementSize) }
		r := newAttestReader(read, read)
		parent := ""
		if top != (v1.Hash{}) {
			parent = top.String()
			raw, err := read(top)
			if err != nil {
				return nil, err
			}
			im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
			if err != nil {
				return nil, err
			}
			if err := r.fromIndex(im, d, false); err != nil {
				return nil, err
			}
		}
		descs, err := o.Index.Attestations(d)
		if err != nil {
			return nil, err
		}
		for _, a := range descs {
			if a.Annotations[export.AnnotationAttestIndex] != parent {
				continue // another index's
			}
			if err := r.read(a.Digest, v1.Hash{}); err != nil {
				return nil, err
			}
		}
		return r.out, nil
	}
}

// layoutAttestations finds the attestations of image d of an OCI layout
// in the indexes descended through (the first is index.json, which also
// lists referrers).
func layoutAttestations(fs layoutFS, indexes []*v1.IndexManifest, d v1.Hash) func(context.Context) ([]*attest.Statement, error) {
	return func(context.Context) ([]*attest.Statement, error) {
		read := func(h v1.Hash) ([]byte, error) { return readAll(fs, blobPath(h), attest.MaxStatementSize) }
		r := newAttestReader(read, read)
		for i, im := range indexes {
			if err := r.fromIndex(im, d, i == 0); err != nil {
				return nil, err
			}
		}
		return r.out, nil
	}
}

// remoteAttestations finds the attestations of image img, which ref names
// (or names an index of), in a registry: the index's attestation
// manifests and the image's referrers.
func remoteAttestations(rm AttestationRemote, ref name.Reference, img v1.Image) func(context.Context) ([]*attest.Statement, error) {
	return func(ctx context.Context) ([]*attest.Statement, error) {
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		repo := ref.Context()
		manifest := func(h v1.Hash) ([]byte, error) {
			desc, err := rm.Get(ctx, repo.Digest(h.String()))
			if err != nil {
				return nil, err
			}
			if desc.Size > attest.MaxStatementSize {
				return nil, fmt.Errorf("manifest %s: %d bytes", h, desc.Size)
			}
			return desc.Manifest, nil
		}
		blob := func(h v1.Hash) ([]byte, error) {
			rc, err := rm.OpenBlob(ctx, repo, h)
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			b, err := io.ReadAll(io.LimitReader(rc, attest.MaxStatementSize+1))
			if err == nil && len(b) > attest.MaxStatementSize {
				err = fmt.Errorf("blob %s: more than %d bytes", h, attest.MaxStatementSize)
			}
			return b, err
		}
		r := newAttestReader(manifest, blob)
		if desc, err := rm.Get(ctx, ref); err == nil && desc.MediaType.IsIndex() {
			im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
			if err != nil {
				return nil, err
			}
			if err := r.fromIndex(im, d, false); err != nil {
				return nil, err
			}
		}
		refs, err := rm.Referrers(ctx, repo.Digest(d.String()))
		if err != nil {
			return nil, err
		}
		im, err := refs.IndexManifest()
		if err != nil {
			return nil, err
		}
		if err := r.fromIndex(im, d, true); err != nil {
			return nil, err
		}
		return r.out, nil
	}
}

// CompareAttestations adds to r how the statements a and b differ: each
// predicate type's statements are paired in order and their predicates
// compared field by field, under
// "attestations[PREDICATE_TYPE#N].predicate". The subjects are left out:
// they name the images, which the report compares already.
func (r *Report) CompareAttestations(a, b []*attest.Statement) error {
	r.AttestationsCompared = true
	byType := func(ss []*attest.Statement) (map[string][]*attest.Statement, []string) {
		m := map[string][]*attest.Statement{}
		var order []string
		for _, s := range ss {
			if _, ok := m[s.PredicateType]; !ok {
				order = append(order, s.PredicateType)
			}
			m[s.PredicateType] = append(m[s.PredicateType], s)
		}
		return m, order
	}
	ma, orderA := byType(a)
	mb, orderB := byType(b)
	types := orderA
	for _, t := range orderB {
		if _, ok := ma[t]; !ok {
			types = append(types, t)
		}
	}
	for _, t := range types {
		sa, sb := ma[t], mb[t]
		for i := 0; i < len(sa) || i < len(sb); i++ {
			p := "attestations[" + t + "#" + strconv.Itoa(i) + "]"
			var x, y any
			var err error
			if i < len(sa) {
				if x, err = statementJSON(sa[i]); err != nil {
					return err
				}
			}
			if i < len(sb) {
				if y, err = statementJSON(sb[i]); err != nil {
					return err
				}
			}
			if x == nil || y == nil {
				// One side lacks the statement: say so in one line.
				old, nw := "", ""
				if x != nil {
					old = "present"
				}
				if y != nil {
					nw = "present"
				}
				r.Attestations = append(r.Attestations, Change{Path: p, Old: old, New: nw})
				continue
			}
			diffJSON(p+".predicate", x, y, &r.Attestations)
		}
	}
	return nil
}

// statementJSON is the predicate of s as generic JSON.
func statementJSON(s *attest.Statement) (any, error) {
	return rawJSON(func() ([]byte, error) { return s.Predicate, nil })
}

package output

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/attest"
	"builder/export"
)

// Where attestation manifests are stored (--attest-store).
const (
	StoreIndex     = "index"     // in an image index next to the image, as BuildKit does
	StoreReferrers = "referrers" // as OCI 1.1 referrers of the image manifest only
	StoreBoth      = "both"
	// annotationStore records, on the local store's index entry of an
	// attestation manifest, the --attest-store it was made for, so that
	// `builder push` pushes it the same way.
	annotationStore = "builder.attest-store"
)

// Attestations are the predicates every image an Exporter writes carries,
// each wrapped in an in-toto statement about that image (its digest
// depends on the output's conversion options), and where they go.
type Attestations struct {
	Predicates []Predicate
	// Platforms are, for a multi-platform build, each platform's
	// predicates by export.PlatformString: one attestation manifest per
	// platform's image, as BuildKit makes them.
	Platforms map[string][]Predicate
	Store     string // StoreIndex, StoreReferrers or StoreBoth; "" is both
}

// Predicate is one attestation's predicate type and JSON body.
type Predicate struct {
	Type string
	Body json.RawMessage
}

func (a *Attestations) any() bool {
	return a != nil && (len(a.Predicates) > 0 || len(a.Platforms) > 0)
}

func (a *Attestations) index() bool {
	return a.any() && a.Store != StoreReferrers
}

func (a *Attestations) referrers() bool {
	return a.any() && a.Store != StoreIndex
}

// bundle makes the attestation manifest of img, named by names.
func (e *Exporter) bundle(img v1.Image, names []string) (*attest.Bundle, v1.Descriptor, error) {
	return e.bundleOf(img, names, e.c.Attest.Predicates)
}

// bundleOf makes the attestation manifest of preds about img, named by
// names.
func (e *Exporter) bundleOf(img v1.Image, names []string, preds []Predicate) (*attest.Bundle, v1.Descriptor, error) {
	desc, err := subjectDescriptor(img)
	if err != nil {
		return nil, desc, err
	}
	subjects, err := attest.Subjects(names, *desc.Platform, desc.Digest)
	if err != nil {
		return nil, desc, err
	}
	var stmts []*attest.Statement
	for _, p := range preds {
		s, err := attest.NewStatement(p.Type, subjects, p.Body)
		if err != nil {
			return nil, desc, err
		}
		stmts = append(stmts, s)
	}
	b, err := attest.NewBundle(desc, stmts, e.c.Attest.referrers())
	return b, desc, err
}

// subjectDescriptor describes img as an index entry, with its platform.
func subjectDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return v1.Descriptor{}, err
	}
	p := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: size, Platform: &p}, nil
}

// withAttestations returns the image index that carries img and its
// attestation manifest b (BuildKit's layout: the image, then the
// attestation manifest with platform unknown/unknown). The image's entry
// gets ann (--annotation manifest-descriptor:).
func withAttestations(img v1.Image, desc v1.Descriptor, b *attest.Bundle, ann map[string]string) (v1.ImageIndex, error) {
	att, err := b.Image()
	if err != nil {
		return nil, err
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{MediaType: desc.MediaType, Platform: desc.Platform, Annotations: ann}},
		mutate.IndexAddendum{Add: att, Descriptor: b.Descriptor},
	), nil
}

// storeAttestations writes b's blobs and manifest into the local store
// and records it in the index next to the image it is about.
func (e *Exporter) storeAttestations(ctx context.Context, b *attest.Bundle) error {
	for d, raw := range b.Blobs {
		if _, _, err := e.c.Store.WriteBlob(ctx, bytes.NewReader(raw), d); err != nil {
			return fmt.Errorf("store attestations: %w", err)
		}
	}
	if _, _, err := e.c.Store.WriteBlob(ctx, bytes.NewReader(b.Manifest), b.Descriptor.Digest); err != nil {
		return fmt.Errorf("store attestations: %w", err)
	}
	desc := b.Descriptor
	desc.Annotations = maps.Clone(desc.Annotations)
	desc.Annotations[annotationStore] = e.c.Attest.storeName()
	return e.c.Index.Attach(desc)
}

// PushStored pushes the attestation manifests the local store keeps for
// img (pushed already under names) as they were stored: in an image index
// with img that names then point at, as referrers, or both, as the
// --attest-store of their build said. It returns the index pushed, or nil
// when names still point at img (no attestations, or referrers only).
func PushStored(ctx context.Context, c Config, img v1.Image, names []string) (v1.ImageIndex, error) {
	return pushStored(ctx, c, img, "", names)
}

// PushStoredPlatforms pushes the attestation manifests the local store
// keeps next to the images of ix, a multi-platform build's index pushed
// already under names, for that index (referrers; those in ix went with
// it).
func PushStoredPlatforms(ctx context.Context, c Config, ix v1.ImageIndex, names []string) error {
	d, err := ix.Digest()
	if err != nil {
		return err
	}
	images, err := export.IndexImages(ix)
	if err != nil {
		return err
	}
	for _, pi := range images {
		if _, err := pushStored(ctx, c, pi.Image, d.String(), names); err != nil {
			return err
		}
	}
	return nil
}

// pushStored is PushStored of the attestations stored for the index
// parent ("" for those of a single image).
func pushStored(ctx context.Context, c Config, img v1.Image, parent string, names []string) (v1.ImageIndex, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	descs, err := c.Index.Attestations(d)
	if err != nil {
		return nil, err
	}
	descs = slices.DeleteFunc(descs, func(a v1.Descriptor) bool { return a.Annotations[export.AnnotationAttestIndex] != parent })
	if len(descs) == 0 {
		return nil, nil
	}
	desc, err := subjectDescriptor(img)
	if err != nil {
		return nil, err
	}
	e := New(c)
	var idx v1.ImageIndex
	for _, a := range descs {
		b, err := attest.LoadBundle(a, func(h v1.Hash) ([]byte, error) { return c.Store.ReadBlob(h, attest.MaxStatementSize) })
		if err != nil {
			return nil, fmt.Errorf("push attestations of %s: %w", names[0], err)
		}
		store := a.Annotations[annotationStore]
		switch {
		case parent != "":
			// An image of an index: names name the index, never an
			// index of this image alone.
			store = StoreReferrers
		case store != "":
		case b.Referrer():
			store = StoreBoth
		default:
			store = StoreIndex
		}
		delete(b.Descriptor.Annotations, annotationStore)
		delete(b.Descriptor.Annotations, export.AnnotationAttestIndex)
		e.c.Attest = &Attestations{Store: store}
		i, err := e.pushAttestations(ctx, img, desc, b, names)
		if err != nil {
			return nil, err
		}
		if i != nil {
			idx = i
		}
	}
	return idx, nil
}

// pushAttestations pushes what the image's names need besides the image
// itself: with an index store, the index of the image and b under every
// name (instead of the bare image, which push then skips); with a
// referrers store, b by digest to each repository, whose subject makes the
// registry (or, without the referrers API, the sha256-<hex> tag index
// go-containerregistry maintains) list it as a referrer of the image.
//
// It returns the index pushed, or nil when the names still point at the
// image.
func (e *Exporter) pushAttestations(ctx context.Context, img v1.Image, desc v1.Descriptor, b *attest.Bundle, names []string) (v1.ImageIndex, error) {
	todo := map[string]map[name.Reference]remote.Taggable{} // by registry
	var idx v1.ImageIndex
	if e.c.Attest.Store != StoreReferrers {
		var err error
		if idx, err = withAttestations(img, desc, b, e.c.DescriptorAnnotations); err != nil {
			return nil, err
		}
	}
	att, err := b.Image()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		r, err := e.c.Registry.ParseReference(n)
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", n, err)
		}
		reg := r.Context().RegistryStr()
		if todo[reg] == nil {
			todo[reg] = map[name.Reference]remote.Taggable{}
		}
		if idx != nil {
			todo[reg][r] = idx
		} else {
			todo[reg][r.Context().Digest(b.Descriptor.Digest.String())] = att
		}
	}
	e.c.Progress(fmt.Sprintf("pushing attestation manifest %s (%s)", b.Descriptor.Digest, e.c.Attest.storeName()))
	for _, t := range todo {
		if err := e.c.Registry.MultiWrite(ctx, t, nil); err != nil {
			return nil, fmt.Errorf("push attestations of %s: %w", names[0], err)
		}
	}
	return idx, nil
}

// describeAttestedIndex fills a Result for an index of img and its attestations:
// the index's digest, media type and size, img's config.
func describeAttestedIndex(idx v1.ImageIndex, img v1.Image, names []string) (*Result, error) {
	r, err := describe(img, names)
	if err != nil {
		return nil, err
	}
	if r.Digest, err = idx.Digest(); err != nil {
		return nil, err
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return nil, err
	}
	r.MediaType, r.Size = string(types.OCIImageIndex), int64(len(raw))
	return r, nil
}

func (a *Attestations) storeName() string {
	if a.Store == "" {
		return StoreBoth
	}
	return a.Store
}

// writeOCIAttested writes img and its attestations to an OCI layout
// archive: with an index store, index.json names the image index holding
// both; with referrers only, index.json lists the image (named) and its
// attestation manifest, as the OCI image layout lists referrers. The
// image's entry, in the index or in index.json, gets ann.
func writeOCIAttested(ctx context.Context, w io.Writer, img v1.Image, desc v1.Descriptor, b *attest.Bundle, refNames []string, index bool, ann map[string]string) error {
	if index {
		idx, err := withAttestations(img, desc, b, ann)
		if err != nil {
			return err
		}
		return export.WriteOCIIndexArchive(ctx, w, idx, refNames, false, nil)
	}
	att, err := b.Image()
	if err != nil {
		return err
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{MediaType: desc.MediaType, Platform: desc.Platform}},
		mutate.IndexAddendum{Add: att, Descriptor: b.Descriptor},
	)
	return export.WriteOCIIndexArchive(ctx, w, idx, refNames, true, ann)
}

// AttachToStore stores the attestations of img (as built, unconverted),
// named by names, in the local store next to it; without attestations it
// does nothing.
func (e *Exporter) AttachToStore(ctx context.Context, img v1.Image, names []string) error {
	if !e.c.Attest.index() && !e.c.Attest.referrers() {
		return nil
	}
	b, _, err := e.bundle(img, names)
	if err != nil {
		return err
	}
	return e.storeAttestations(ctx, b)
}

// attestedArtifact is a, the image img, with its attestation manifest b
// about desc: the store attaches it, an OCI archive holds it, and an OCI
// layout directory, which cannot, is refused.
func (e *Exporter) attestedArtifact(ctx context.Context, a artifact, img v1.Image, desc v1.Descriptor, b *attest.Bundle) artifact {
	a.attach = func() error { return e.storeAttestations(ctx, b) }
	a.ociDir = func(string, string) error {
		return errors.New("attestations in an OCI layout directory are not supported: use tar=true, or --provenance=false --sbom=false")
	}
	a.ociTar = func(w io.Writer, refs []string) error {
		return writeOCIAttested(ctx, w, img, desc, b, refs, e.c.Attest.index(), e.c.DescriptorAnnotations)
	}
	return a
}

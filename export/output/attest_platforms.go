package output

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/attest"
	"builder/export"
)

// platformBundles makes, as BuildKit does for a multi-platform build, one
// attestation manifest per image of images: the predicates of its
// platform about that image, named by names. Images whose platform has no
// predicates get none.
func (e *Exporter) platformBundles(images []export.PlatformImage, names []string) ([]*attest.Bundle, error) {
	var out []*attest.Bundle
	for _, pi := range images {
		preds := e.c.Attest.Platforms[export.PlatformString(pi.Platform)]
		if len(preds) == 0 {
			continue
		}
		b, _, err := e.bundleOf(pi.Image, names, preds)
		if err != nil {
			return nil, fmt.Errorf("attestations of %s: %w", export.PlatformString(pi.Platform), err)
		}
		out = append(out, b)
	}
	return out, nil
}

// withPlatformAttestations returns idx with the attestation manifests
// bundles listed after its images (platform unknown/unknown, each
// annotated with the digest of its image), BuildKit's layout.
func withPlatformAttestations(idx v1.ImageIndex, bundles []*attest.Bundle) (v1.ImageIndex, error) {
	adds := make([]mutate.IndexAddendum, 0, len(bundles))
	for _, b := range bundles {
		att, err := b.Image()
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: att, Descriptor: b.Descriptor})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

// attestedIndexArtifact is a, the index idx of a multi-platform build
// (with the attestation manifests in it for an index store), with its
// attestation manifests bundles. With referrers only, the store attaches
// them next to the index's images and an OCI archive lists them beside
// idx, as the OCI image layout lists referrers; an OCI layout directory
// is refused, as for one image.
func (e *Exporter) attestedIndexArtifact(ctx context.Context, a artifact, idx v1.ImageIndex, bundles []*attest.Bundle) artifact {
	a.ociDir = func(string, string) error {
		return errors.New("attestations in an OCI layout directory are not supported: use tar=true, or --provenance=false --sbom=false")
	}
	if e.c.Attest.index() {
		return a
	}
	a.attach = func() error {
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		for _, b := range bundles {
			b := *b
			b.Descriptor.Annotations = maps.Clone(b.Descriptor.Annotations)
			b.Descriptor.Annotations[export.AnnotationAttestIndex] = d.String()
			if err := e.storeAttestations(ctx, &b); err != nil {
				return err
			}
		}
		return nil
	}
	a.ociTar = func(w io.Writer, refs []string) error {
		mt, err := idx.MediaType()
		if err != nil {
			return err
		}
		top := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
			mutate.IndexAddendum{Add: idx, Descriptor: v1.Descriptor{MediaType: mt}})
		if top, err = withPlatformAttestations(top, bundles); err != nil {
			return err
		}
		return export.WriteOCIIndexArchive(ctx, w, top, refs, true, e.c.DescriptorAnnotations)
	}
	return a
}

// pushReferrers pushes each attestation manifest of bundles by digest to
// the repository of every name; its subject makes it a referrer of its
// image (through the referrers API, or the sha256-<hex> tag index
// go-containerregistry maintains for registries without it).
func (e *Exporter) pushReferrers(ctx context.Context, bundles []*attest.Bundle, names []string) error {
	todo := map[string]map[name.Reference]remote.Taggable{} // by registry
	for _, n := range names {
		r, err := e.c.Registry.ParseReference(n)
		if err != nil {
			return fmt.Errorf("push %s: %w", n, err)
		}
		reg := r.Context().RegistryStr()
		if todo[reg] == nil {
			todo[reg] = map[name.Reference]remote.Taggable{}
		}
		for _, b := range bundles {
			att, err := b.Image()
			if err != nil {
				return err
			}
			todo[reg][r.Context().Digest(b.Descriptor.Digest.String())] = att
		}
	}
	for _, b := range bundles {
		e.c.Progress(fmt.Sprintf("pushing attestation manifest %s of %s (%s)", b.Descriptor.Digest,
			b.Descriptor.Annotations[attest.AnnotationReferenceDigest], e.c.Attest.storeName()))
	}
	for _, t := range todo {
		if err := e.c.Registry.MultiWrite(ctx, t, nil); err != nil {
			return fmt.Errorf("push attestations of %s: %w", names[0], err)
		}
	}
	return nil
}

// AttachPlatformsToStore stores the attestations of a multi-platform
// build's images (as built, unconverted) whose index the build tagged
// with names: with an index store it stores the index with the
// attestation manifests in it and points names at it, which it returns;
// with referrers only it attaches them next to the images and returns
// nil. Without attestations it does nothing.
func (e *Exporter) AttachPlatformsToStore(ctx context.Context, images []export.PlatformImage, names []string) (*Result, error) {
	if !e.c.Attest.any() {
		return nil, nil
	}
	idx, err := export.AssembleIndex(images, e.c.IndexAnnotations)
	if err != nil {
		return nil, err
	}
	bundles, err := e.platformBundles(images, names)
	if err != nil || len(bundles) == 0 {
		return nil, err
	}
	a := e.attestedIndexArtifact(ctx, artifact{}, idx, bundles)
	if !e.c.Attest.index() {
		return nil, a.attach()
	}
	out, err := withPlatformAttestations(idx, bundles)
	if err != nil {
		return nil, err
	}
	d, err := export.WriteIndex(ctx, e.c.Store, out)
	if err != nil {
		return nil, err
	}
	if err := e.tagAll(d, names); err != nil {
		return nil, err
	}
	return describeIndex(out, names)
}

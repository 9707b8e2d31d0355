package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/attest"
	"builder/snapshot/content"
)

// PlatformImage is the image one platform of a multi-platform build made.
type PlatformImage struct {
	Platform v1.Platform
	Image    v1.Image
	// Annotations go on the image's descriptor in the index
	// (--annotation manifest-descriptor:).
	Annotations map[string]string
}

// AssembleIndex is the one place a multi-platform build's index is made:
// one manifest descriptor per image, in the order given, each with its
// platform and annotations, and the index annotated with annotations. The
// index is an OCI image index, or a Docker manifest list when the images
// are Docker schema 2 manifests (oci-mediatypes=false), which cannot carry
// annotations: those are refused. Callers may append more manifests
// (attestations) with mutate.AppendManifests.
func AssembleIndex(images []PlatformImage, annotations map[string]string) (v1.ImageIndex, error) {
	if len(images) == 0 {
		return nil, errors.New("assemble index: no image")
	}
	mt := types.OCIImageIndex
	annotated := len(annotations) > 0
	adds := make([]mutate.IndexAddendum, 0, len(images))
	seen := map[string]bool{}
	for i, pi := range images {
		m, err := pi.Image.MediaType()
		if err != nil {
			return nil, fmt.Errorf("assemble index: %w", err)
		}
		if i == 0 && m == types.DockerManifestSchema2 {
			mt = types.DockerManifestList
		}
		p := pi.Platform
		if seen[PlatformString(p)] {
			return nil, fmt.Errorf("assemble index: platform %s given twice", PlatformString(p))
		}
		seen[PlatformString(p)] = true
		annotated = annotated || len(pi.Annotations) > 0
		adds = append(adds, mutate.IndexAddendum{Add: pi.Image,
			Descriptor: v1.Descriptor{MediaType: m, Platform: &p, Annotations: maps.Clone(pi.Annotations)}})
	}
	if annotated && mt == types.DockerManifestList {
		return nil, errors.New("assemble index: a Docker manifest list cannot carry annotations: use OCI media types")
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, mt), adds...)
	if len(annotations) > 0 {
		idx = mutate.Annotations(idx, annotations).(v1.ImageIndex)
	}
	return idx, nil
}

// PlatformString formats p as "os/arch[/variant]".
func PlatformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// PlatformDir names a platform's directory in a multi-platform root
// filesystem export, as BuildKit does: linux_arm64, linux_arm_v7.
func PlatformDir(p v1.Platform) string {
	return strings.ReplaceAll(PlatformString(p), "/", "_")
}

// IndexImages lists the images of idx with their platforms, skipping
// manifests without one (attestations) and nested indexes.
func IndexImages(idx v1.ImageIndex) ([]PlatformImage, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []PlatformImage
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" || !d.MediaType.IsImage() {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s of the index: %w", d.Digest, err)
		}
		out = append(out, PlatformImage{Platform: *d.Platform, Image: img})
	}
	return out, nil
}

// HostImage picks the image of images the host runs natively, else the
// first; docker and podman load the host's manifest of an index.
func HostImage(images []PlatformImage) int {
	for i, pi := range images {
		if pi.Platform.OS == "linux" && pi.Platform.Architecture == runtime.GOARCH {
			return i
		}
	}
	return 0
}

// WriteIndex stores idx and every image it holds, children first, so an
// index in the store always has its manifests. It returns the index digest.
func WriteIndex(ctx context.Context, s *content.Store, idx v1.ImageIndex) (v1.Hash, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write index: %w", err)
	}
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			return v1.Hash{}, fmt.Errorf("write index: manifest %s has media type %s, not an image", d.Digest, d.MediaType)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("write index: %w", err)
		}
		if _, err := WriteImage(ctx, s, img); err != nil {
			return v1.Hash{}, err
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write index: %w", err)
	}
	d, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write index: %w", err)
	}
	if _, _, err := s.WriteBlob(ctx, bytes.NewReader(raw), d); err != nil {
		return v1.Hash{}, fmt.Errorf("write index %s: %w", d, err)
	}
	return d, nil
}

// LoadIndex returns the image index stored under digest; its images load
// with LoadImage. A blob that is no index gives an error wrapping
// ErrNotIndex.
func LoadIndex(s *content.Store, digest v1.Hash) (v1.ImageIndex, error) {
	raw, err := s.ReadBlob(digest, maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("load index: %w", err)
	}
	mt, err := manifestMediaType(raw)
	if err != nil {
		return nil, fmt.Errorf("load index %s: %w", digest, err)
	}
	if !mt.IsIndex() {
		return nil, fmt.Errorf("load index %s: media type %q: %w", digest, mt, ErrNotIndex)
	}
	m, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("load index %s: %w", digest, err)
	}
	return &storeIndex{s: s, raw: raw, m: m, mt: mt, digest: digest}, nil
}

// ErrNotIndex is returned by LoadIndex for a blob that is not an index.
var ErrNotIndex = errors.New("not an image index")

// storeIndex is an image index whose manifests are in a content store.
type storeIndex struct {
	s      *content.Store
	raw    []byte
	m      *v1.IndexManifest
	mt     types.MediaType
	digest v1.Hash
}

func (x *storeIndex) MediaType() (types.MediaType, error)       { return x.mt, nil }
func (x *storeIndex) Digest() (v1.Hash, error)                  { return x.digest, nil }
func (x *storeIndex) Size() (int64, error)                      { return int64(len(x.raw)), nil }
func (x *storeIndex) IndexManifest() (*v1.IndexManifest, error) { return x.m.DeepCopy(), nil }
func (x *storeIndex) RawManifest() ([]byte, error)              { return x.raw, nil }

// Image loads the image h of the index; an attestation manifest the index
// lists (whose statements are no layers with diff IDs) loads as one.
func (x *storeIndex) Image(h v1.Hash) (v1.Image, error) {
	for _, d := range x.m.Manifests {
		if d.Digest == h && attest.IsAttestation(d) {
			b, err := attest.LoadBundle(d, func(h v1.Hash) ([]byte, error) { return x.s.ReadBlob(h, attest.MaxStatementSize) })
			if err != nil {
				return nil, err
			}
			return b.Image()
		}
	}
	return LoadImage(x.s, h)
}

func (x *storeIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return LoadIndex(x.s, h)
}

// indexChildren loads every manifest of idx, which must all be images.
func indexChildren(idx v1.ImageIndex) ([]v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []v1.Image
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			return nil, fmt.Errorf("manifest %s of the index has media type %s, not an image", d.Digest, d.MediaType)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s of the index: %w", d.Digest, err)
		}
		out = append(out, img)
	}
	return out, nil
}

// WriteOCIIndexDir adds idx to the OCI image layout at dir as WriteOCIDir
// adds an image: named by refName (replacing what had that name), or
// appended.
func WriteOCIIndexDir(ctx context.Context, dir string, idx v1.ImageIndex, refName string, annotations map[string]string) error {
	images, err := indexChildren(idx)
	if err != nil {
		return fmt.Errorf("write oci dir: %w", err)
	}
	for _, img := range images { // as WriteOCIDir, before anything is written
		if err := VerifyLayers(ctx, img); err != nil {
			return fmt.Errorf("write oci dir: %w", err)
		}
	}
	return addToOCIDir(ctx, dir, refName, annotations,
		func(p layout.Path, m match.Matcher, opts ...layout.Option) error {
			return p.ReplaceIndex(idx, m, opts...)
		},
		func(p layout.Path, opts ...layout.Option) error { return p.AppendIndex(idx, opts...) })
}

// WriteDockerIndexArchive writes the images of a multi-platform build in
// the format `docker load` reads, each platform its own manifest.json
// entry so that every one loads; the tags go to the entry of the host's
// platform (else the first), as docker and podman tag the host's image of
// an index.
func WriteDockerIndexArchive(ctx context.Context, w io.Writer, images []PlatformImage, tags []string) error {
	host := HostImage(images)
	list := make([]DockerImage, 0, len(images))
	for i, pi := range images {
		di := DockerImage{Image: pi.Image}
		if i == host {
			di.Tags = tags
		}
		list = append(list, di)
	}
	return WriteDockerArchiveImages(ctx, w, list)
}

package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Size limits for the blobs read whole into memory.
const (
	maxManifestSize = 8 << 20
	maxConfigSize   = content.MaxConfigSize // the limit the builder writes with
)

// ErrNotImage is returned by LoadImage for a blob that is not an image
// manifest (an index, a schema 1 manifest, or not a manifest at all).
var ErrNotImage = errors.New("not an image manifest")

// storeImage is the partial.CompressedImageCore of an image in the store.
type storeImage struct {
	s           *content.Store
	rawManifest []byte
	manifest    *v1.Manifest
	mediaType   types.MediaType
	rawConfig   []byte
	layers      map[v1.Hash]*storeLayer
}

// LoadImage returns the image whose manifest is the store blob
// manifestDigest. The manifest and config are read now; layers stay in the
// store and are opened when read. Every blob the manifest names must be in
// the store, else the error wraps content.ErrNotFound.
func LoadImage(s *content.Store, manifestDigest v1.Hash) (v1.Image, error) {
	raw, err := s.ReadBlob(manifestDigest, maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("load image: %w", err)
	}
	mt, err := manifestMediaType(raw)
	if err != nil {
		return nil, fmt.Errorf("load image %s: %w", manifestDigest, err)
	}
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return nil, fmt.Errorf("load image %s: media type %q: %w", manifestDigest, mt, ErrNotImage)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("load image %s: parse manifest: %w", manifestDigest, err)
	}
	rawConfig, err := s.ReadBlob(m.Config.Digest, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("load image %s: config: %w", manifestDigest, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, fmt.Errorf("load image %s: parse config: %w", manifestDigest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("load image %s: manifest has %d layers, config %d diff IDs", manifestDigest, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	img := &storeImage{s: s, rawManifest: raw, manifest: m, mediaType: mt, rawConfig: rawConfig, layers: map[v1.Hash]*storeLayer{}}
	for i, desc := range m.Layers {
		size, err := s.Size(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("load image %s: layer: %w", manifestDigest, err)
		}
		if size != desc.Size {
			return nil, fmt.Errorf("load image %s: layer %s has %d bytes in the store, manifest says %d", manifestDigest, desc.Digest, size, desc.Size)
		}
		img.layers[desc.Digest] = &storeLayer{s: s, desc: LayerDesc{
			Digest: desc.Digest, DiffID: cfg.RootFS.DiffIDs[i], Size: desc.Size, MediaType: desc.MediaType,
		}}
	}
	return partial.CompressedToImage(img)
}

// manifestMediaType returns the media type a manifest declares; OCI
// manifests may leave it out, in which case the shape decides.
func manifestMediaType(raw []byte) (types.MediaType, error) {
	var probe struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     types.MediaType   `json:"mediaType"`
		Config        json.RawMessage   `json:"config"`
		Manifests     []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return "", fmt.Errorf("parse manifest: %w", err)
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType, nil
	case probe.SchemaVersion == 1:
		return types.DockerManifestSchema1, nil
	case probe.Manifests != nil:
		return types.OCIImageIndex, nil
	case probe.Config != nil:
		return types.OCIManifestSchema1, nil
	}
	return "", errors.New("parse manifest: no media type")
}

// RawConfigFile implements partial.CompressedImageCore.
func (i *storeImage) RawConfigFile() ([]byte, error) { return i.rawConfig, nil }

// MediaType implements partial.CompressedImageCore.
func (i *storeImage) MediaType() (types.MediaType, error) { return i.mediaType, nil }

// RawManifest implements partial.CompressedImageCore.
func (i *storeImage) RawManifest() ([]byte, error) { return i.rawManifest, nil }

// LayerByDigest implements partial.CompressedImageCore; the config blob
// counts as a layer, as ggcr expects.
func (i *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.manifest.Config.Digest {
		return partial.ConfigLayer(i)
	}
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("layer %s: not in image", h)
}

// WriteImage stores img: every layer blob the store lacks (streamed from
// img, up to four at once), then the config, then the manifest, so a
// manifest in the store always has its blobs. Every blob is checked against
// its digest. It is idempotent and returns the manifest digest.
func WriteImage(ctx context.Context, s *content.Store, img v1.Image) (v1.Hash, error) {
	m, err := img.Manifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: manifest: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: digest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: layers: %w", err)
	}
	if len(layers) != len(m.Layers) {
		return v1.Hash{}, fmt.Errorf("write image: %d layers but %d in the manifest", len(layers), len(m.Layers))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	seen := map[v1.Hash]bool{}
	for i, l := range layers {
		desc := m.Layers[i]
		if seen[desc.Digest] || s.Has(desc.Digest) {
			continue
		}
		seen[desc.Digest] = true
		g.Go(func() error { return writeLayerBlob(gctx, s, l, desc) })
	}
	if err := g.Wait(); err != nil {
		return v1.Hash{}, fmt.Errorf("write image %s: %w", digest, err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: config: %w", err)
	}
	if _, _, err := s.WriteBlob(ctx, bytes.NewReader(rawConfig), m.Config.Digest); err != nil {
		return v1.Hash{}, fmt.Errorf("write image %s: config: %w", digest, err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write image: manifest: %w", err)
	}
	if _, _, err := s.WriteBlob(ctx, bytes.NewReader(rawManifest), digest); err != nil {
		return v1.Hash{}, fmt.Errorf("write image %s: manifest: %w", digest, err)
	}
	return digest, nil
}

func writeLayerBlob(ctx context.Context, s *content.Store, l v1.Layer, desc v1.Descriptor) error {
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	defer rc.Close()
	// Read one byte more than the manifest promises to notice a longer blob
	// without reading an endless one.
	_, n, err := s.WriteBlob(ctx, io.LimitReader(rc, desc.Size+1), desc.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	if n != desc.Size {
		return fmt.Errorf("layer %s: %d bytes, manifest says %d", desc.Digest, n, desc.Size)
	}
	return nil
}

package export

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Media type families Convert can produce.
const (
	MediaTypesKeep   = ""       // keep the image's manifest media type
	MediaTypesOCI    = "oci"    // OCI manifest, config and layer types
	MediaTypesDocker = "docker" // Docker v2 schema 2 types
)

// ConvertOptions say how Convert rewrites an image. The zero value changes
// nothing.
type ConvertOptions struct {
	// Compression is content.Gzip, content.Zstd or content.Uncompressed;
	// empty keeps every layer as it is. Layers already compressed this way
	// are kept unless Force is set.
	Compression string
	// Level is the compression level (gzip 1-9, zstd 1-22); 0 is the
	// codec's default.
	Level int
	// Force recompresses layers that already use Compression, base image
	// layers included, so every layer gets Level.
	Force bool
	// MediaTypes is MediaTypesOCI, MediaTypesDocker or MediaTypesKeep.
	// Docker has no media type for zstd layers: an image with any zstd
	// layer gets OCI types whatever MediaTypes says, as BuildKit does.
	MediaTypes string
}

// Changes reports whether o can change an image at all.
func (o ConvertOptions) Changes() bool {
	return o.Compression != "" || o.Force || o.MediaTypes != MediaTypesKeep
}

// Convert stores a variant of img, whose blobs must be in s, with its layers
// recompressed and its media types changed as o says, and returns the new
// manifest digest and image (backed by the store). The config is kept byte
// for byte: recompression does not change the uncompressed layers, so the
// diff IDs stay and the image ID (config digest) is the same. Recompressed
// layers are streamed through content.Store.WriteLayer, several at once.
// Convert is idempotent; when nothing changes it returns img's own digest.
func Convert(ctx context.Context, s *content.Store, img v1.Image, o ConvertOptions) (v1.Hash, v1.Image, error) {
	d, out, err := convert(ctx, s, img, o)
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("convert image: %w", err)
	}
	return d, out, nil
}

func convert(ctx context.Context, s *content.Store, img v1.Image, o ConvertOptions) (v1.Hash, v1.Image, error) {
	switch o.Compression {
	case "", content.Gzip, content.Zstd, content.Uncompressed:
	default:
		return v1.Hash{}, nil, fmt.Errorf("unknown compression %q (gzip, zstd or uncompressed)", o.Compression)
	}
	switch o.MediaTypes {
	case MediaTypesKeep, MediaTypesOCI, MediaTypesDocker:
	default:
		return v1.Hash{}, nil, fmt.Errorf("unknown media types %q", o.MediaTypes)
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("digest: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("manifest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("layers: %w", err)
	}
	if len(layers) != len(m.Layers) {
		return v1.Hash{}, nil, fmt.Errorf("%d layers but %d in the manifest", len(layers), len(m.Layers))
	}
	out := m.DeepCopy()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for i, l := range layers {
		desc := m.Layers[i]
		have := layerCompression(desc.MediaType)
		if have == "" || o.Compression == "" || (have == o.Compression && !o.Force) {
			continue // foreign or unknown layers are never touched
		}
		g.Go(func() error {
			nd, err := recompress(gctx, s, l, desc, o)
			if err != nil {
				return fmt.Errorf("layer %s: %w", desc.Digest, err)
			}
			out.Layers[i] = nd
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return v1.Hash{}, nil, err
	}
	family := o.MediaTypes
	if family == MediaTypesKeep {
		family = MediaTypesOCI
		if m.MediaType == types.DockerManifestSchema2 {
			family = MediaTypesDocker
		}
	}
	for _, l := range out.Layers {
		if layerCompression(l.MediaType) == content.Zstd {
			family = MediaTypesOCI
		}
	}
	setMediaTypes(out, family)
	raw, err := json.Marshal(out)
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("encode manifest: %w", err)
	}
	if old, err := img.RawManifest(); err == nil && manifestEqual(old, out) {
		return digest, img, nil
	}
	nd, _, err := s.WriteBlob(ctx, bytes.NewReader(raw), v1.Hash{})
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("store manifest: %w", err)
	}
	// The config blob is the one img has; make sure the store has it too.
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("config: %w", err)
	}
	if _, _, err := s.WriteBlob(ctx, bytes.NewReader(rawConfig), m.Config.Digest); err != nil {
		return v1.Hash{}, nil, fmt.Errorf("store config: %w", err)
	}
	res, err := LoadImage(s, nd)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	return nd, res, nil
}

// manifestEqual reports whether raw parses to the same manifest as m, so an
// unchanged image keeps its exact bytes (and digest).
func manifestEqual(raw []byte, m *v1.Manifest) bool {
	old, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return false
	}
	a, err1 := json.Marshal(old)
	b, err2 := json.Marshal(m)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// recompress writes the uncompressed tar of l through the store's layer
// compressor and describes the new blob; the diff ID must not change.
func recompress(ctx context.Context, s *content.Store, l v1.Layer, desc v1.Descriptor, o ConvertOptions) (v1.Descriptor, error) {
	diffID, err := l.DiffID()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("diff id: %w", err)
	}
	info, err := s.WriteLayer(ctx, func(w io.Writer) error {
		rc, err := l.Uncompressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(w, rc)
		return err
	}, content.LayerOptions{Compression: o.Compression, Level: o.Level})
	if err != nil {
		return v1.Descriptor{}, err
	}
	if info.DiffID != diffID {
		return v1.Descriptor{}, fmt.Errorf("uncompressed layer has digest %s, config says %s", info.DiffID, diffID)
	}
	nd := desc
	nd.Digest, nd.Size, nd.MediaType = info.Digest, info.Size, types.MediaType(info.MediaType)
	return nd, nil
}

// layerCompression names the compression a layer media type declares, or
// "" for types Convert does not handle (foreign layers, non-layers).
func layerCompression(mt types.MediaType) string {
	switch mt {
	case types.OCILayer, types.DockerLayer:
		return content.Gzip
	case types.OCILayerZStd, "application/vnd.docker.image.rootfs.diff.tar.zstd":
		return content.Zstd
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return content.Uncompressed
	}
	return ""
}

// setMediaTypes gives m the manifest, config and layer media types of
// family (MediaTypesOCI or MediaTypesDocker). Docker manifests carry no
// annotations, so they are dropped there.
func setMediaTypes(m *v1.Manifest, family string) {
	docker := family == MediaTypesDocker
	if docker {
		m.MediaType, m.Config.MediaType = types.DockerManifestSchema2, types.DockerConfigJSON
		m.Annotations = nil
	} else {
		m.MediaType, m.Config.MediaType = types.OCIManifestSchema1, types.OCIConfigJSON
	}
	for i := range m.Layers {
		l := &m.Layers[i]
		switch c := layerCompression(l.MediaType); {
		case c == content.Gzip && docker:
			l.MediaType = types.DockerLayer
		case c == content.Gzip:
			l.MediaType = types.OCILayer
		case c == content.Uncompressed && docker:
			l.MediaType = types.DockerUncompressedLayer
		case c == content.Uncompressed:
			l.MediaType = types.OCIUncompressedLayer
		case c == content.Zstd:
			l.MediaType = types.OCILayerZStd
		}
		if docker {
			l.Annotations = nil
		}
	}
}

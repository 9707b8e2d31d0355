package cacheio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/cache"
	"builder/build/registry"
	"builder/export"
	"builder/snapshot/content"
)

// Export writes cfg, and the blobs it names (read from s, where they must
// be), to the registry or layout directory spec names, and returns the
// digest of the cache manifest. With spec.Merge a registry export merges
// cfg with the cache the reference holds (exportMerged) instead of
// replacing it. With spec.Compression set, layers in
// another compression are recompressed first (into s); their records then
// name the new blobs. Blobs go first and the manifest last. Exporting the
// same cache again is idempotent. A registry cache is written through rc
// (its credentials, TLS settings and retries; never to a mirror); rc may
// be nil for a local cache. Errors are *Error.
func Export(ctx context.Context, spec Spec, cfg Config, s *content.Store, rc *registry.Client) (v1.Hash, error) {
	if spec.Type == TypeRegistry && spec.Merge {
		d, err := exportMerged(ctx, spec, cfg, s, rc)
		if err != nil {
			return v1.Hash{}, &Error{Op: "export", Spec: spec, Err: err}
		}
		return d, nil
	}
	img, err := cacheImage(ctx, spec, cfg, s)
	if err != nil {
		return v1.Hash{}, &Error{Op: "export", Spec: spec, Err: err}
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, &Error{Op: "export", Spec: spec, Err: err}
	}
	switch spec.Type {
	case TypeRegistry:
		err = writeRegistry(ctx, rc, spec.Ref, img)
	case TypeLocal:
		err = writeLayout(spec.Dir, spec.Tag, img)
	default:
		err = fmt.Errorf("type %q is not exported as an artifact", spec.Type)
	}
	if err != nil {
		return v1.Hash{}, &Error{Op: "export", Spec: spec, Err: err}
	}
	return d, nil
}

// writeRegistry pushes img to ref through rc.
func writeRegistry(ctx context.Context, rc *registry.Client, ref string, img v1.Image) error {
	if rc == nil {
		return errors.New("no registry client")
	}
	r, err := rc.ParseReference(ref)
	if err != nil {
		return err
	}
	return rc.Write(ctx, r, img, nil)
}

// writeLayout puts img into the OCI layout at dir (created if missing)
// under tag, replacing the image that had that tag. Blobs of earlier
// exports stay; the directory only grows.
func writeLayout(dir, tag string, img v1.Image) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if _, serr := os.Stat(dir); serr != nil && !errors.Is(serr, fs.ErrNotExist) {
			return serr
		}
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return fmt.Errorf("create OCI layout: %w", err)
		}
	}
	return p.ReplaceImage(img, match.Annotation(refNameAnnotation, tag),
		layout.WithAnnotations(map[string]string{refNameAnnotation: tag}))
}

// cacheImage makes the cache artifact as a v1.Image backed by s.
func cacheImage(ctx context.Context, spec Spec, cfg Config, s *content.Store) (v1.Image, error) {
	if spec.Compression != "" {
		var err error
		if cfg, err = recompress(ctx, s, cfg, spec.Compression); err != nil {
			return nil, err
		}
	}
	for _, l := range cfg.descriptors() {
		if !s.Has(l.Digest) {
			return nil, fmt.Errorf("blob %s is not in the store", l.Digest)
		}
	}
	img, _, err := artifact(cfg, s)
	return img, err
}

// artifact makes the cache artifact of cfg, its layers read from s (nil
// when only the manifest is wanted), and returns its config blob too.
func artifact(cfg Config, s *content.Store) (v1.Image, []byte, error) {
	cfgRaw, err := Encode(cfg)
	if err != nil {
		return nil, nil, err
	}
	layers := cfg.descriptors()
	cfgDigest, cfgSize, err := v1.SHA256(bytesReader(cfgRaw))
	if err != nil {
		return nil, nil, err
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, ArtifactType: ArtifactType,
		Config: v1.Descriptor{MediaType: ConfigMediaType, Digest: cfgDigest, Size: cfgSize}, Layers: layers}
	if m.Layers == nil {
		m.Layers = []v1.Descriptor{}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, nil, err
	}
	core := &imageCore{s: s, config: cfgRaw, manifest: raw, layers: map[v1.Hash]v1.Descriptor{}}
	for _, l := range layers {
		core.layers[l.Digest] = l
	}
	img, err := partial.CompressedToImage(core)
	return img, cfgRaw, err
}

// recompress rewrites every layer cfg names into the given compression,
// keeping the diff IDs.
func recompress(ctx context.Context, s *content.Store, cfg Config, compression string) (Config, error) {
	want := map[string]string{"gzip": content.MediaTypeLayerGzip, "zstd": content.MediaTypeLayerZstd,
		"uncompressed": content.MediaTypeLayerUncompressed}[compression]
	done := map[v1.Hash]content.LayerInfo{}
	conv := func(d, diffID v1.Hash, mt string) (content.LayerInfo, error) {
		if info, ok := done[d]; ok {
			return info, nil
		}
		if ociMediaType(mt) == want {
			info := content.LayerInfo{DiffID: diffID, Digest: d, MediaType: mt}
			size, err := s.Size(d)
			info.Size = size
			done[d] = info
			return info, err
		}
		info, err := s.WriteLayer(ctx, func(w io.Writer) error {
			r, err := export.OpenUncompressed(s, d)
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = io.Copy(w, r)
			return err
		}, content.LayerOptions{Compression: compression})
		if err != nil {
			return content.LayerInfo{}, fmt.Errorf("recompress %s: %w", d, err)
		}
		if info.DiffID != diffID {
			return content.LayerInfo{}, fmt.Errorf("recompress %s: diff ID %s, want %s: %w", d, info.DiffID, diffID, content.ErrDigestMismatch)
		}
		done[d] = info
		return info, nil
	}
	out := Config{Records: make([]cache.Record, len(cfg.Records)), Mounts: make([]Mount, len(cfg.Mounts))}
	for i, r := range cfg.Records {
		if !r.Empty {
			info, err := conv(r.Digest, r.DiffID, r.MediaType)
			if err != nil {
				return Config{}, err
			}
			r.Digest, r.Size, r.MediaType = info.Digest, info.Size, info.MediaType
		}
		out.Records[i] = r
	}
	for i, m := range cfg.Mounts {
		info, err := conv(m.Digest, m.DiffID, m.MediaType)
		if err != nil {
			return Config{}, err
		}
		m.Digest, m.Size, m.MediaType = info.Digest, info.Size, info.MediaType
		out.Mounts[i] = m
	}
	return out, nil
}

// ociMediaType maps Docker layer media types to their OCI twins.
func ociMediaType(mt string) string {
	switch types.MediaType(mt) {
	case types.DockerLayer:
		return content.MediaTypeLayerGzip
	case types.DockerUncompressedLayer:
		return content.MediaTypeLayerUncompressed
	}
	return mt
}

// imageCore is the cache artifact as ggcr's partial.CompressedImageCore.
type imageCore struct {
	s        *content.Store
	config   []byte
	manifest []byte
	layers   map[v1.Hash]v1.Descriptor
}

func (c *imageCore) RawConfigFile() ([]byte, error)      { return c.config, nil }
func (c *imageCore) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (c *imageCore) RawManifest() ([]byte, error)        { return c.manifest, nil }

func (c *imageCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	d, ok := c.layers[h]
	if !ok {
		return nil, fmt.Errorf("blob %s is not part of the cache", h)
	}
	return &storeBlob{s: c.s, d: d}, nil
}

// storeBlob is a layer blob read from the content store.
type storeBlob struct {
	s *content.Store
	d v1.Descriptor
}

func (b *storeBlob) Digest() (v1.Hash, error)            { return b.d.Digest, nil }
func (b *storeBlob) Size() (int64, error)                { return b.d.Size, nil }
func (b *storeBlob) MediaType() (types.MediaType, error) { return b.d.MediaType, nil }
func (b *storeBlob) Compressed() (io.ReadCloser, error)  { return b.s.OpenVerified(b.d.Digest) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

package build

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/pull"
	"builder/build/registry"
	"builder/export"
	"builder/imageref"
)

// baseImage is an image in the store that a stage starts from or copies from.
type baseImage struct {
	manifestDigest v1.Hash
	configDigest   v1.Hash
	config         *v1.ConfigFile
	layers         []layerRef
	healthStart    time.Duration // Healthcheck.StartInterval, not in config
}

// imageKey names one resolution of an image: by normalized reference and
// platform, from the store (pull false) or fresh from its registry (pull
// true). A --pull request never takes the result of a store lookup.
type imageKey struct {
	ref, platform string
	pull          bool
}

// resolveImage finds an image by reference for platform: in the local
// store unless the build pulls (--pull), else in its registry, which
// stores it locally. Concurrent requests for one key, from any build on
// the Builder, share one pull (reported on the first build's progress),
// which is cancelled only when all of them have given up; each returns
// when its own ctx is done. Nothing is remembered once the pull is done:
// a build that must see one image per reference asks through image.
func (j *job) resolveImage(ctx context.Context, ref string, platform v1.Platform) (*baseImage, error) {
	norm, err := imageref.Normalize(ref)
	if err != nil {
		return nil, err
	}
	key := imageKey{ref: norm, platform: platformString(platform), pull: j.o.Pull}
	return j.b.pulls.Do(ctx, key, func(ctx context.Context) (*baseImage, error) {
		return j.resolveOnce(ctx, norm, platform)
	})
}

// image resolves ref for this build: the first resolution of a reference
// and platform is kept, so every stage of one build that names an image
// sees the same one, and --pull pulls it once per build.
func (j *job) image(ctx context.Context, ref string, platform v1.Platform) (*baseImage, error) {
	norm, err := imageref.Normalize(ref)
	if err != nil {
		return nil, err
	}
	key := imageKey{ref: norm, platform: platformString(platform), pull: j.o.Pull}
	j.imagesMu.Lock()
	img, ok := j.images[key]
	j.imagesMu.Unlock()
	if ok {
		return img, nil
	}
	img, err = j.resolveImage(ctx, norm, platform)
	if err != nil {
		return nil, err
	}
	j.rec.noteImage(norm, platform, img.manifestDigest)
	j.imagesMu.Lock()
	defer j.imagesMu.Unlock()
	if first, ok := j.images[key]; ok {
		return first, nil
	}
	if j.images == nil {
		j.images = map[imageKey]*baseImage{}
	}
	j.images[key] = img
	return img, nil
}

// resolveOnce is one resolution of resolveImage, which shares it.
func (j *job) resolveOnce(ctx context.Context, ref string, platform v1.Platform) (*baseImage, error) {
	b := j.b
	pullRef := ref
	if !j.o.Pull {
		if desc, err := b.index.Lookup(ref); err == nil && b.store.Has(desc.Digest) {
			// A stored image made for another platform is pulled again
			// for the one asked for (FROM --platform); of a stored
			// multi-platform image, the platform's manifest is used.
			d := b.storedManifest(desc, platform)
			if img, err := b.loadBase(d); err == nil && samePlatform(img.config, platform) {
				if b.hasLayers(img) {
					return img, nil
				}
				// A layer blob is gone (removed as corrupt, say): fetch
				// the same image again, by digest, for the missing blobs.
				if r, err := b.registry.ParseReference(ref); err == nil {
					pullRef = r.Context().Digest(d.String()).String()
				}
			}
		}
	}
	if j.o.NoPull {
		return nil, fmt.Errorf("image %s (%s) is not in the local store, and --pull=never forbids pulling it", ref, platformString(platform))
	}
	var progress func(string)
	var meter registry.MeterFunc
	if j.progress != nil {
		progress = j.progress.Line
		meter = func(label string, size int64) registry.Meter { return j.progress.Transfer(label, size) }
	}
	dgst, err := pull.Pull(ctx, b.registry, b.store, pullRef, pull.Options{Platform: platform, Progress: progress, Meter: meter})
	if err != nil {
		return nil, err
	}
	img, err := b.loadBase(dgst)
	if err != nil {
		return nil, err
	}
	// A pinned reference ("name@sha256:…") names no tag to point at the
	// image; pulling it again finds its blobs in the store.
	if !strings.Contains(ref, "@") {
		if err := b.tag(ref, dgst); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// hasLayers reports whether every layer blob of img is in the store.
func (b *Builder) hasLayers(img *baseImage) bool {
	for _, l := range img.layers {
		if !b.store.Has(l.Digest) {
			return false
		}
	}
	return true
}

// samePlatform reports whether an image config is for platform p, comparing
// OS and architecture as BuildKit does.
func samePlatform(cfg *v1.ConfigFile, p v1.Platform) bool {
	return cfg.OS == p.OS && cfg.Architecture == p.Architecture
}

// platformString formats p as "os/arch[/variant]".
func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// loadBase reads an image's manifest and config from the store.
func (b *Builder) loadBase(manifestDigest v1.Hash) (*baseImage, error) {
	img, err := export.LoadImage(b.store, manifestDigest)
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("image %s: %d diff IDs for %d layers", manifestDigest, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	bi := &baseImage{manifestDigest: manifestDigest, configDigest: m.Config.Digest, config: cfg}
	if raw, err := img.RawConfigFile(); err == nil {
		bi.healthStart = healthStartInterval(raw)
	}
	for i, l := range m.Layers {
		bi.layers = append(bi.layers, layerRef{DiffID: cfg.RootFS.DiffIDs[i], Digest: l.Digest, Size: l.Size, MediaType: string(l.MediaType)})
	}
	return bi, nil
}

// tag points name at the manifest in the local store.
func (b *Builder) tag(ref string, manifestDigest v1.Hash) error {
	return b.index.Tag(ref, v1.Descriptor{Digest: manifestDigest})
}

// tagAll points every tag at the manifest or index d and returns the tags
// normalized.
func (b *Builder) tagAll(tags []string, d v1.Hash) ([]string, error) {
	var out []string
	for _, t := range tags {
		norm, err := imageref.Normalize(t)
		if err != nil {
			return nil, err
		}
		if err := b.tag(norm, d); err != nil {
			return nil, fmt.Errorf("tag %s: %w", t, err)
		}
		out = append(out, norm)
	}
	return out, nil
}

// ociLayerType maps a layer media type to its OCI equivalent; the bytes
// are the same.
func ociLayerType(mt string) types.MediaType {
	switch {
	case strings.HasSuffix(mt, "gzip"):
		return types.OCILayer
	case strings.HasSuffix(mt, "zstd"):
		return types.OCILayerZStd
	case mt == string(types.DockerUncompressedLayer), mt == string(types.OCIUncompressedLayer):
		return types.OCIUncompressedLayer
	}
	return types.MediaType(mt)
}

// commitImage writes the final stage's config and manifest into the store
// and, if tag, tags the image.
func (j *job) commitImage(ctx context.Context, st *stageState, tag bool) (*Result, error) {
	cfg := st.cfg
	for _, k := range sortedKeys(j.o.Labels) {
		if cfg.Config.Labels == nil {
			cfg.Config.Labels = map[string]string{}
		}
		cfg.Config.Labels[k] = j.o.Labels[k]
	}
	cfg.RootFS = v1.RootFS{Type: "layers", DiffIDs: st.diffIDs()}
	switch {
	case j.platformGiven:
		// As BuildKit: a build given its platform makes an image of that
		// platform, also from a base of another (FROM --platform).
		t := j.o.Platform
		same := cfg.OS == t.OS && cfg.Architecture == t.Architecture
		cfg.OS, cfg.Architecture = t.OS, t.Architecture
		if t.Variant != "" || !same {
			cfg.Variant = t.Variant
		}
		if t.OSVersion != "" || !same {
			cfg.OSVersion = t.OSVersion
		}
		if t.OSFeatures != nil {
			cfg.OSFeatures = slices.Clone(t.OSFeatures)
		}
	case cfg.OS == "":
		cfg.OS = j.o.Platform.OS
		cfg.Architecture = j.o.Platform.Architecture
	}
	created := st.created
	if n := len(cfg.History); n > 0 {
		created = cfg.History[n-1].Created.Time
	}
	cfg.Created = v1.Time{Time: j.stepTime(created)}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if cfgJSON, err = withHealthStartInterval(cfgJSON, st.healthStart); err != nil {
		return nil, err
	}
	if cfgJSON, err = j.inlineCache(cfgJSON, st.index); err != nil {
		return nil, err
	}
	if len(cfgJSON) > MaxConfigSize {
		// The store's readers would refuse it: write nothing.
		return nil, fmt.Errorf("write config: %w", &LimitError{What: "the image config (with --label and the inline cache)", Limit: MaxConfigSize})
	}
	// The image goes into the store whole: fetch the layers that --cache-from
	// hits left remote.
	if err := j.fetchLayers(ctx, st.layers); err != nil {
		return nil, err
	}
	cfgDigest, cfgSize, err := j.b.store.WriteBlob(ctx, bytes.NewReader(cfgJSON), v1.Hash{})
	if err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: cfgDigest, Size: cfgSize}}
	if len(j.o.Annotations.Manifest) > 0 {
		m.Annotations = j.o.Annotations.Manifest
	}
	for _, l := range st.layers {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: ociLayerType(l.MediaType), Digest: l.Digest, Size: l.Size})
	}
	mJSON, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	mDigest, _, err := j.b.store.WriteBlob(ctx, bytes.NewReader(mJSON), v1.Hash{})
	if err != nil {
		return nil, fmt.Errorf("write manifest: %w", err)
	}
	var tags []string
	if tag {
		if tags, err = j.b.tagAll(j.o.Tags, mDigest); err != nil {
			return nil, err
		}
	}
	img, err := export.LoadImage(j.b.store, mDigest)
	if err != nil {
		return nil, err
	}
	return &Result{ManifestDigest: mDigest, ConfigDigest: cfgDigest, Image: img, Tags: tags}, nil
}

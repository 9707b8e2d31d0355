package cacheio

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"builder/build/registry"
	"builder/snapshot/content"
)

// Error is the error of a failed import or export: one line naming the
// cache, e.g. "import cache 127.0.0.1:5000/app:cache: manifest unknown (no
// such tag or digest)". Unwrap gives the cause, with its type: a
// registry's answer is a *transport.Error for errors.As.
type Error struct {
	Op   string // "import" or "export"
	Spec Spec
	Err  error
}

func (e *Error) Error() string {
	return e.Op + " cache " + e.Spec.String() + ": " + registry.Describe(e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Cache is an imported cache: its metadata, and where to fetch the blobs
// it names. A Cache is safe for concurrent use.
type Cache struct {
	Spec   Spec
	Config Config
	// Manifest is the digest of the manifest the cache was read from.
	Manifest v1.Hash
	// Inline is set when the records came from an image config.
	Inline bool
	layers map[v1.Hash]int64 // the blobs Fetch may fetch, with their sizes
	src    blobSource
}

// Import reads the manifest and config of the cache spec names (a cache
// artifact, or an image with an inline cache) and checks them. It fetches
// no layer blob. A registry cache is read through rc, trying the mirrors
// it configures for the cache's registry first, as a pull does; the blobs
// later come from the source that served the manifest. rc may be nil for
// a local cache. Errors are *Error.
func Import(ctx context.Context, spec Spec, rc *registry.Client) (*Cache, error) {
	var src blobSource
	var err error
	switch spec.Type {
	case TypeRegistry:
		src, err = newRegistrySource(ctx, rc, spec.Ref)
	case TypeLocal:
		src, err = newLayoutSource(spec.Dir, spec.Tag)
	default:
		err = fmt.Errorf("cache type %q cannot be imported", spec.Type)
	}
	if err != nil {
		return nil, &Error{Op: "import", Spec: spec, Err: err}
	}
	c, err := load(ctx, spec, src)
	if err != nil {
		return nil, &Error{Op: "import", Spec: spec, Err: err}
	}
	return c, nil
}

// blobSource reads a manifest and blobs from one registry repository or
// layout directory.
type blobSource interface {
	// manifest returns the raw manifest and its digest, verified when the
	// reference pins a digest.
	manifest(ctx context.Context) ([]byte, v1.Hash, error)
	// blob opens a small blob (the config); the caller verifies it.
	blob(ctx context.Context, d v1.Hash) (io.ReadCloser, error)
	// fetch copies blob d into s, verified while it is written, unless s
	// has it.
	fetch(ctx context.Context, s *content.Store, d v1.Descriptor) error
}

func load(ctx context.Context, spec Spec, src blobSource) (*Cache, error) {
	raw, mdigest, err := src.manifest(ctx)
	if err != nil {
		return nil, err
	}
	mt, err := registry.MediaTypeOf(raw)
	if err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if mt.IsIndex() {
		return nil, fmt.Errorf("manifest is an image index (%s); a cache is one manifest, and an image with an inline cache must be single-platform: %w", mt, ErrInvalid)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	cfgRaw, err := readVerified(ctx, src, m.Config)
	if err != nil {
		return nil, fmt.Errorf("read cache config: %w", err)
	}
	c := &Cache{Spec: spec, Manifest: mdigest, layers: map[v1.Hash]int64{}, src: src}
	if string(m.Config.MediaType) == ConfigMediaType {
		if c.Config, err = Decode(cfgRaw); err != nil {
			return nil, err
		}
	} else {
		cfg, ok, err := ExtractInline(cfgRaw)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("neither a builder cache (config type %s) nor an image with an inline cache: %w", m.Config.MediaType, ErrInvalid)
		}
		c.Config, c.Inline = cfg, true
	}
	if err := c.Config.checkLayers(m.Layers); err != nil {
		return nil, err
	}
	for _, l := range m.Layers {
		c.layers[l.Digest] = l.Size
	}
	return c, nil
}

// readVerified reads a small blob whole and checks its size and digest.
func readVerified(ctx context.Context, src blobSource, d v1.Descriptor) ([]byte, error) {
	if d.Size < 0 || d.Size > maxConfigSize {
		return nil, fmt.Errorf("blob %s: size %d out of range: %w", d.Digest, d.Size, ErrInvalid)
	}
	rc, err := src.blob(ctx, d.Digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dt, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d.Digest, err)
	}
	if err := verifyBytes(dt, d.Digest); err != nil {
		return nil, err
	}
	return dt, nil
}

func verifyBytes(dt []byte, want v1.Hash) error {
	sum := sha256.Sum256(dt)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != want.String() {
		return fmt.Errorf("blob %s: content hashes to %s: %w", want, got, content.ErrDigestMismatch)
	}
	return nil
}

// Has reports whether the cache can supply blob d.
func (c *Cache) Has(d v1.Hash) bool {
	_, ok := c.layers[d]
	return ok
}

// Fetch copies blob d from the cache into s, unless s has it. The bytes
// are checked against d while they are written; a blob that does not match
// is rejected (the error wraps content.ErrDigestMismatch) and not stored.
// Fetch is idempotent and safe to call concurrently (the store's writes
// are atomic).
func (c *Cache) Fetch(ctx context.Context, s *content.Store, d v1.Hash) error {
	if s.Has(d) {
		return nil
	}
	size, ok := c.layers[d]
	if !ok {
		return fmt.Errorf("fetch cache blob %s from %s: not in the cache manifest", d, c.Spec)
	}
	err := c.src.fetch(ctx, s, v1.Descriptor{Digest: d, Size: size})
	if errors.Is(err, content.ErrDigestMismatch) {
		return fmt.Errorf("fetch cache blob %s from %s: content does not match its digest, rejected: %w", d, c.Spec, err)
	}
	if err != nil {
		return fmt.Errorf("fetch cache blob %s from %s: %w", d, c.Spec, err)
	}
	return nil
}

// registrySource reads from one repository over the registry API: the
// first of the cache reference's pull sources (mirrors, then the registry)
// that has the manifest.
type registrySource struct {
	rc     *registry.Client
	ref    name.Reference // on the source that served the manifest
	raw    []byte
	digest v1.Hash
}

// newRegistrySource finds the manifest of ref on its mirrors or its
// registry. When every source fails, the error is the registry's own.
func newRegistrySource(ctx context.Context, rc *registry.Client, ref string) (*registrySource, error) {
	if rc == nil {
		return nil, errors.New("no registry client")
	}
	r, err := rc.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	for _, src := range rc.PullSources(r) {
		err = src.Err
		var desc *remote.Descriptor
		if err == nil {
			desc, err = rc.Get(ctx, src.Ref)
		}
		if err == nil {
			if len(desc.Manifest) > maxConfigSize {
				return nil, fmt.Errorf("get manifest: larger than %d bytes", maxConfigSize)
			}
			return &registrySource{rc: rc, ref: src.Ref, raw: desc.Manifest, digest: desc.Digest}, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("get manifest: %w", err)
}

// manifest returns the manifest found; remote.Get checked the digest of a
// digest reference.
func (r *registrySource) manifest(context.Context) ([]byte, v1.Hash, error) {
	return r.raw, r.digest, nil
}

func (r *registrySource) blob(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	rc, err := r.rc.OpenBlob(ctx, r.ref.Context(), d)
	if err != nil {
		return nil, fmt.Errorf("get blob: %w", err)
	}
	return rc, nil
}

func (r *registrySource) fetch(ctx context.Context, s *content.Store, d v1.Descriptor) error {
	return r.rc.FetchBlob(ctx, s, r.ref.Context(), d, nil, nil)
}

// layoutSource reads from an OCI image layout directory.
type layoutSource struct {
	p   layout.Path
	tag string
}

func newLayoutSource(dir, tag string) (*layoutSource, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("not an OCI layout: %w", err)
	}
	return &layoutSource{p: p, tag: tag}, nil
}

func (l *layoutSource) manifest(ctx context.Context) ([]byte, v1.Hash, error) {
	ii, err := l.p.ImageIndex()
	if err != nil {
		return nil, v1.Hash{}, err
	}
	idx, err := ii.IndexManifest()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("parse index.json: %w", err)
	}
	var found []v1.Descriptor
	for _, m := range idx.Manifests {
		if m.Annotations[refNameAnnotation] == l.tag {
			found = append(found, m)
		}
	}
	if len(found) == 0 && l.tag == DefaultTag && len(idx.Manifests) == 1 {
		found = idx.Manifests
	}
	if len(found) != 1 {
		return nil, v1.Hash{}, fmt.Errorf("index.json has %d manifests named %q, want 1", len(found), l.tag)
	}
	raw, err := readVerified(ctx, l, found[0])
	if err != nil {
		return nil, v1.Hash{}, err
	}
	return raw, found[0].Digest, nil
}

func (l *layoutSource) blob(_ context.Context, d v1.Hash) (io.ReadCloser, error) {
	if !validHash(d) {
		return nil, fmt.Errorf("blob %q: %w", d, ErrInvalid)
	}
	return l.p.Blob(d)
}

func (l *layoutSource) fetch(ctx context.Context, s *content.Store, d v1.Descriptor) error {
	rc, err := l.blob(ctx, d.Digest)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, n, err := s.WriteBlob(ctx, io.LimitReader(rc, d.Size+1), d.Digest)
	if err != nil {
		return err
	}
	if n != d.Size {
		return fmt.Errorf("%d bytes, the manifest says %d: %w", n, d.Size, ErrInvalid)
	}
	return nil
}

// refNameAnnotation names an image in an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

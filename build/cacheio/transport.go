package cacheio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/pull"
	"builder/snapshot/content"
)

// Options reach registries. The zero value uses HTTPS (plain HTTP for
// loopback) and the credentials of the docker config file.
type Options struct {
	// Insecure lists registries ("host" or "host:port") reached over
	// plain HTTP, as in pull.Options.
	Insecure []string
	// Keychain supplies credentials; default authn.DefaultKeychain.
	Keychain authn.Keychain
	// Transport is the HTTP transport under authentication; default
	// remote.DefaultTransport.
	Transport http.RoundTripper
}

func (o Options) withDefaults() Options {
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Transport == nil {
		o.Transport = remote.DefaultTransport
	}
	return o
}

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
	open   func(ctx context.Context, d v1.Hash) (io.ReadCloser, error)
}

// Import reads the manifest and config of the cache spec names (a cache
// artifact, or an image with an inline cache) and checks them. It fetches
// no layer blob.
func Import(ctx context.Context, spec Spec, o Options) (*Cache, error) {
	o = o.withDefaults()
	var src blobSource
	var err error
	switch spec.Type {
	case TypeRegistry:
		src, err = newRegistrySource(ctx, spec.Ref, o)
	case TypeLocal:
		src, err = newLayoutSource(spec.Dir, spec.Tag)
	default:
		err = fmt.Errorf("cache type %q cannot be imported", spec.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("import cache %s: %w", spec, err)
	}
	c, err := load(ctx, spec, src)
	if err != nil {
		return nil, fmt.Errorf("import cache %s: %w", spec, err)
	}
	return c, nil
}

// blobSource reads a manifest and blobs from one registry repository or
// layout directory.
type blobSource interface {
	// manifest returns the raw manifest and its digest, verified when the
	// reference pins a digest.
	manifest(ctx context.Context) ([]byte, v1.Hash, error)
	// blob opens a blob; the caller verifies it.
	blob(ctx context.Context, d v1.Hash) (io.ReadCloser, error)
}

func load(ctx context.Context, spec Spec, src blobSource) (*Cache, error) {
	raw, mdigest, err := src.manifest(ctx)
	if err != nil {
		return nil, err
	}
	mt, err := pull.MediaTypeOf(raw)
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
	c := &Cache{Spec: spec, Manifest: mdigest, layers: map[v1.Hash]int64{}, open: src.blob}
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
	rc, err := c.open(ctx, d)
	if err != nil {
		return fmt.Errorf("fetch cache blob %s from %s: %w", d, c.Spec, err)
	}
	defer rc.Close()
	_, n, err := s.WriteBlob(ctx, io.LimitReader(rc, size+1), d)
	if errors.Is(err, content.ErrDigestMismatch) {
		return fmt.Errorf("fetch cache blob %s from %s: content does not match its digest, rejected: %w", d, c.Spec, err)
	}
	if err != nil {
		return fmt.Errorf("fetch cache blob %s from %s: %w", d, c.Spec, err)
	}
	if n != size {
		return fmt.Errorf("fetch cache blob %s from %s: %d bytes, the manifest says %d: %w", d, c.Spec, n, size, ErrInvalid)
	}
	return nil
}

// registrySource reads from one repository over the registry API.
type registrySource struct {
	ref    name.Reference
	client *http.Client
}

func newRegistrySource(ctx context.Context, ref string, o Options) (*registrySource, error) {
	r, err := pull.ParseReference(ref, o.Insecure)
	if err != nil {
		return nil, err
	}
	repo := r.Context()
	auth, err := authn.Resolve(ctx, o.Keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("resolve credentials: %w", err)
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, transport.NewRetry(o.Transport),
		[]string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("%s", pull.Describe(err))
	}
	return &registrySource{ref: r, client: &http.Client{Transport: rt}}, nil
}

func (r *registrySource) url(kind, id string) string {
	repo := r.ref.Context()
	return repo.Registry.Scheme() + "://" + repo.RegistryStr() + "/v2/" + repo.RepositoryStr() + "/" + kind + "/" + id
}

func (r *registrySource) get(ctx context.Context, u string, accept []types.MediaType) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for _, a := range accept {
		req.Header.Add("Accept", string(a))
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, errors.New(pull.Describe(err))
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, errors.New(pull.Describe(err))
	}
	return resp, nil
}

func (r *registrySource) manifest(ctx context.Context) ([]byte, v1.Hash, error) {
	resp, err := r.get(ctx, r.url("manifests", r.ref.Identifier()), []types.MediaType{
		types.OCIManifestSchema1, types.DockerManifestSchema2, types.OCIImageIndex, types.DockerManifestList})
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("get manifest: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxConfigSize+1))
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("get manifest: %w", err)
	}
	if len(raw) > maxConfigSize {
		return nil, v1.Hash{}, fmt.Errorf("get manifest: larger than %d bytes", maxConfigSize)
	}
	sum := sha256.Sum256(raw)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if pinned, ok := r.ref.(name.Digest); ok && pinned.DigestStr() != d.String() {
		return nil, v1.Hash{}, fmt.Errorf("manifest hashes to %s, the reference pins %s: %w", d, pinned.DigestStr(), content.ErrDigestMismatch)
	}
	return raw, d, nil
}

func (r *registrySource) blob(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	resp, err := r.get(ctx, r.url("blobs", d.String()), nil)
	if err != nil {
		return nil, fmt.Errorf("get blob: %w", err)
	}
	return resp.Body, nil
}

// layoutSource reads from an OCI image layout directory.
type layoutSource struct {
	dir, tag string
}

func newLayoutSource(dir, tag string) (*layoutSource, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return nil, fmt.Errorf("not an OCI layout: %w", err)
	}
	return &layoutSource{dir: dir, tag: tag}, nil
}

func (l *layoutSource) manifest(ctx context.Context) ([]byte, v1.Hash, error) {
	dt, err := os.ReadFile(filepath.Join(l.dir, "index.json"))
	if err != nil {
		return nil, v1.Hash{}, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(dt))
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
	return os.Open(filepath.Join(l.dir, "blobs", d.Algorithm, d.Hex))
}

// refNameAnnotation names an image in an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

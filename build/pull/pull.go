// Package pull copies images from a registry into the content store.
//
// Pull resolves a reference (Docker name rules: "busybox" is
// docker.io/library/busybox:latest), picks one platform out of an index,
// downloads the config and layer blobs in parallel straight into the store,
// each checked against its digest, and writes the image manifest last, so a
// manifest in the store always has all its blobs. Blobs already in the store
// are not fetched again, and a reference pinned by digest whose image is
// complete in the store needs no network at all.
package pull

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"builder/export"
	"builder/snapshot/content"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Options tunes Pull. The zero value pulls linux/amd64 over HTTPS (plain
// HTTP for loopback registries) with the credentials of
// ~/.docker/config.json.
type Options struct {
	// Insecure lists registries ("host" or "host:port") that are reached
	// over plain HTTP. Loopback registries (127.0.0.0/8, ::1, localhost)
	// always are.
	Insecure []string
	// Platform selects the image out of an index; default linux/amd64. An
	// empty Variant matches any variant.
	Platform v1.Platform
	// Keychain supplies credentials; default authn.DefaultKeychain, which
	// reads $DOCKER_CONFIG/config.json or ~/.docker/config.json.
	Keychain authn.Keychain
	// Progress, if set, receives one-line progress messages. Pull calls it
	// from one goroutine at a time.
	Progress func(string)
	// Jobs bounds the parallel blob downloads; default 4.
	Jobs int
	// Transport is the HTTP transport under authentication and retries;
	// default remote.DefaultTransport.
	Transport http.RoundTripper
}

// Error is the error of a failed Pull: one line naming the reference, e.g.
// "pull 127.0.0.1:5999/x:latest: connection refused". Unwrap gives the
// cause, so errors.Is(err, content.ErrDigestMismatch) and the like work.
type Error struct {
	Ref string // the normalized reference, or the input if it did not parse
	Err error
}

func (e *Error) Error() string { return "pull " + e.Ref + ": " + describe(e.Err) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Size limits for blobs read whole into memory.
const maxManifestSize = 8 << 20

// Pull fetches the image ref names into s and returns its manifest digest
// and the image, backed by the store (export.LoadImage). It is idempotent.
// Every blob is verified against its digest before it is stored; on any
// error, blobs fetched so far stay in the store (they are valid) but the
// manifest is not written. Errors are *Error.
func Pull(ctx context.Context, s *content.Store, ref string, opts Options) (v1.Hash, v1.Image, error) {
	r, err := parseRef(ref, opts.Insecure)
	if err != nil {
		return v1.Hash{}, nil, &Error{Ref: ref, Err: err}
	}
	full, err := export.NormalizeName(ref)
	if err != nil {
		full = ref
	}
	p := newPuller(s, r, opts)
	d, err := p.pull(ctx, full)
	if err != nil {
		return v1.Hash{}, nil, &Error{Ref: full, Err: err}
	}
	img, err := export.LoadImage(s, d)
	if err != nil {
		return v1.Hash{}, nil, &Error{Ref: full, Err: err}
	}
	return d, img, nil
}

// parseRef parses ref with Docker defaults, marking registries reached over
// plain HTTP as insecure.
func parseRef(ref string, insecure []string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if plainHTTP(r.Context().RegistryStr(), insecure) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

// plainHTTP reports whether registry (host or host:port) is spoken to over
// plain HTTP: loopback addresses, localhost, and the insecure list (entries
// match the host:port exactly or the host alone).
func plainHTTP(registry string, insecure []string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, in := range insecure {
		if in == registry || in == host {
			return true
		}
	}
	return false
}

// puller is one Pull: the reference, the store and a lazily made
// authenticated client shared by all requests.
type puller struct {
	s    *content.Store
	ref  name.Reference
	opts Options

	progressMu sync.Mutex

	clientMu sync.Mutex
	rt       http.RoundTripper
}

func newPuller(s *content.Store, r name.Reference, opts Options) *puller {
	if opts.Platform.OS == "" && opts.Platform.Architecture == "" {
		opts.Platform = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 4
	}
	if opts.Transport == nil {
		opts.Transport = remote.DefaultTransport
	}
	return &puller{s: s, ref: r, opts: opts}
}

func (p *puller) progress(format string, args ...any) {
	if p.opts.Progress == nil {
		return
	}
	p.progressMu.Lock()
	defer p.progressMu.Unlock()
	p.opts.Progress(fmt.Sprintf(format, args...))
}

// transport returns the authenticated round tripper, pinging the registry
// and exchanging credentials on first use.
func (p *puller) transport(ctx context.Context) (http.RoundTripper, error) {
	p.clientMu.Lock()
	defer p.clientMu.Unlock()
	if p.rt != nil {
		return p.rt, nil
	}
	repo := p.ref.Context()
	auth, err := authn.Resolve(ctx, p.opts.Keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("resolve credentials: %w", err)
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, transport.NewRetry(p.opts.Transport),
		[]string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	p.rt = rt
	return rt, nil
}

// manifest is a fetched manifest or index.
type manifest struct {
	raw       []byte
	mediaType types.MediaType
	digest    v1.Hash
}

// getManifest returns the manifest ref names (a tag or a digest of this
// repository). A digest already in the store is read from it.
func (p *puller) getManifest(ctx context.Context, ref name.Reference) (manifest, error) {
	if d, ok := ref.(name.Digest); ok {
		h, err := v1.NewHash(d.DigestStr())
		if err != nil {
			return manifest{}, err
		}
		if raw, err := p.s.ReadBlob(h, maxManifestSize); err == nil {
			mt, err := mediaTypeOf(raw)
			if err != nil {
				return manifest{}, fmt.Errorf("manifest %s: %w", h, err)
			}
			return manifest{raw: raw, mediaType: mt, digest: h}, nil
		}
	}
	rt, err := p.transport(ctx)
	if err != nil {
		return manifest{}, err
	}
	desc, err := remote.Get(ref, remote.WithTransport(rt), remote.WithContext(ctx))
	if err != nil {
		return manifest{}, err
	}
	// remote.Get checks the digest of a digest reference; a tag's digest is
	// computed from the bytes.
	return manifest{raw: desc.Manifest, mediaType: desc.MediaType, digest: desc.Digest}, nil
}

// pull resolves the reference down to one image manifest, fetches its
// blobs and stores the manifest last.
func (p *puller) pull(ctx context.Context, full string) (v1.Hash, error) {
	p.progress("resolving %s", full)
	m, err := p.getManifest(ctx, p.ref)
	if err != nil {
		return v1.Hash{}, err
	}
	for depth := 0; m.mediaType.IsIndex(); depth++ {
		if depth == 4 {
			return v1.Hash{}, errors.New("indexes nested too deep")
		}
		// Keep the index: a later pull by its digest then works offline.
		if _, _, err := p.s.WriteBlob(ctx, bytes.NewReader(m.raw), m.digest); err != nil {
			return v1.Hash{}, fmt.Errorf("store index: %w", err)
		}
		child, err := choosePlatform(m, p.opts.Platform)
		if err != nil {
			return v1.Hash{}, err
		}
		p.progress("platform %s: %s", platformString(p.opts.Platform), child.Digest)
		if m, err = p.getManifest(ctx, p.ref.Context().Digest(child.Digest.String())); err != nil {
			return v1.Hash{}, err
		}
	}
	switch m.mediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return v1.Hash{}, errors.New("docker schema 1 manifests are not supported")
	default:
		return v1.Hash{}, fmt.Errorf("unsupported manifest media type %q", m.mediaType)
	}
	im, err := v1.ParseManifest(bytes.NewReader(m.raw))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("parse manifest %s: %w", m.digest, err)
	}
	if err := p.fetchBlobs(ctx, append([]v1.Descriptor{im.Config}, im.Layers...)); err != nil {
		return v1.Hash{}, err
	}
	if _, _, err := p.s.WriteBlob(ctx, bytes.NewReader(m.raw), m.digest); err != nil {
		return v1.Hash{}, fmt.Errorf("store manifest: %w", err)
	}
	p.progress("pulled %s@%s", full, m.digest)
	return m.digest, nil
}

// choosePlatform picks the first manifest of an index that matches want.
func choosePlatform(m manifest, want v1.Platform) (v1.Descriptor, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(m.raw))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("parse index %s: %w", m.digest, err)
	}
	var have []string
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			continue
		}
		if platformMatches(want, *d.Platform) {
			return d, nil
		}
		if d.Platform.OS != "unknown" { // attestation manifests
			have = append(have, platformString(*d.Platform))
		}
	}
	return v1.Descriptor{}, fmt.Errorf("no image for platform %s (index has %s)", platformString(want), strings.Join(have, ", "))
}

// platformMatches reports whether an index entry's platform satisfies want.
func platformMatches(want, have v1.Platform) bool {
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	if want.Variant != "" && normVariant(have) != normVariant(want) {
		return false
	}
	return want.OSVersion == "" || want.OSVersion == have.OSVersion
}

// normVariant spells the default variant of arm64 explicitly.
func normVariant(p v1.Platform) string {
	if p.Architecture == "arm64" && p.Variant == "" {
		return "v8"
	}
	return p.Variant
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// fetchBlobs downloads the blobs the store lacks, opts.Jobs at a time.
func (p *puller) fetchBlobs(ctx context.Context, blobs []v1.Descriptor) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Jobs)
	seen := map[v1.Hash]bool{}
	for _, desc := range blobs {
		if seen[desc.Digest] {
			continue
		}
		seen[desc.Digest] = true
		if size, err := p.s.Size(desc.Digest); err == nil && size == desc.Size {
			continue
		}
		g.Go(func() error {
			if err := p.fetchBlob(gctx, desc); err != nil {
				return fmt.Errorf("blob %s: %w", desc.Digest, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// fetchBlob streams one blob into the store, checking size and digest.
func (p *puller) fetchBlob(ctx context.Context, desc v1.Descriptor) error {
	if p.s.Has(desc.Digest) {
		// Stored, but with another size than the manifest says: the
		// manifest is wrong, since stored blobs match their digest.
		return fmt.Errorf("stored blob does not have the %d bytes the manifest says", desc.Size)
	}
	rt, err := p.transport(ctx)
	if err != nil {
		return err
	}
	repo := p.ref.Context()
	u := url.URL{
		Scheme: repo.Scheme(),
		Host:   repo.RegistryStr(),
		Path:   fmt.Sprintf("/v2/%s/blobs/%s", repo.RepositoryStr(), desc.Digest),
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	p.progress("fetching %s (%s)", desc.Digest, HumanSize(desc.Size))
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return err
	}
	if resp.ContentLength >= 0 && resp.ContentLength != desc.Size {
		return fmt.Errorf("registry sends %d bytes, manifest says %d", resp.ContentLength, desc.Size)
	}
	// One byte more than promised reveals a longer body without reading an
	// endless one; the store rejects anything that misses the digest.
	_, n, err := p.s.WriteBlob(ctx, io.LimitReader(resp.Body, desc.Size+1), desc.Digest)
	if err != nil {
		return err
	}
	if n != desc.Size {
		return fmt.Errorf("%d bytes, manifest says %d", n, desc.Size)
	}
	return nil
}

// mediaTypeOf reads the media type a stored manifest declares.
func mediaTypeOf(raw []byte) (types.MediaType, error) {
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     types.MediaType `json:"mediaType"`
		Manifests     []any           `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return "", err
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType, nil
	case probe.Manifests != nil:
		return types.OCIImageIndex, nil
	case probe.SchemaVersion == 2:
		return types.OCIManifestSchema1, nil
	}
	return "", errors.New("manifest without media type")
}

// HumanSize spells a byte count in binary units for progress messages.
func HumanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

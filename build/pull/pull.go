// Package pull copies images from a registry into the content store.
//
// Pull resolves a reference (Docker name rules: "busybox" is
// docker.io/library/busybox:latest), picks one platform out of an index,
// downloads the config and layer blobs in parallel straight into the store,
// each checked against its digest, and writes the image manifest last, so a
// manifest in the store always has all its blobs. Blobs already in the store
// are not fetched again, and a reference pinned by digest whose image is
// complete in the store needs no network at all.
//
// Mirrors from the registry configuration (build/registries) are tried in
// order before the registry itself; any failure of a mirror falls through
// to the next source. Requests that fail transiently (5xx, 429, reset
// connections) are retried with backoff, and a blob whose body arrives
// broken (cut short, reset mid-body, or not matching its digest) is fetched
// again a bounded number of times; nothing that fails its digest is ever
// stored.
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
	"syscall"
	"time"

	"builder/build/registries"
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
	// Meter, if set, counts the bytes of each blob download as they
	// arrive, for a live view of bytes and rates.
	Meter MeterFunc
	// Jobs bounds the parallel blob downloads; default 4.
	Jobs int
	// Transport is the HTTP transport under authentication and retries;
	// default remote.DefaultTransport.
	Transport http.RoundTripper
	// Registries is the registry configuration: mirrors, plain HTTP and
	// TLS settings per registry. nil means none.
	Registries *registries.Config
	// Backoff is the retry schedule of one request (5xx, 429, reset
	// connections) and the waits between fetches of a blob whose body
	// arrived broken; default 5 tries, starting at 200ms and tripling.
	Backoff *remote.Backoff
	// BlobAttempts bounds the fetches of one blob whose body arrives cut
	// short, reset or with the wrong digest; default 3.
	BlobAttempts int
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
	cfg := opts.Registries
	r, err := cfg.ParseReference(ref, opts.Insecure)
	if err != nil {
		return v1.Hash{}, nil, &Error{Ref: ref, Err: err}
	}
	full, err := export.NormalizeName(ref)
	if err != nil {
		full = ref
	}
	prog := &progress{fn: opts.Progress}
	var d v1.Hash
	pulled := false
	for _, m := range cfg.Mirrors(r.Context().RegistryStr()) {
		mr, err := cfg.MirrorReference(r, m, opts.Insecure)
		if err == nil {
			d, err = newPuller(s, mr, opts, prog).pull(ctx, full, " from mirror "+m)
		}
		if err == nil {
			pulled = true
			break
		}
		if ctx.Err() != nil {
			return v1.Hash{}, nil, &Error{Ref: full, Err: err}
		}
		prog.printf("mirror %s: %s; trying the next source", m, describe(err))
	}
	if !pulled {
		if d, err = newPuller(s, r, opts, prog).pull(ctx, full, ""); err != nil {
			return v1.Hash{}, nil, &Error{Ref: full, Err: err}
		}
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
	return (*registries.Config)(nil).ParseReference(ref, insecure)
}

// plainHTTP reports whether registry (host or host:port) is spoken to over
// plain HTTP: loopback addresses, localhost, and the insecure list (entries
// match the host:port exactly or the host alone).
func plainHTTP(registry string, insecure []string) bool {
	return (*registries.Config)(nil).PlainHTTP(registry, insecure)
}

// progress serializes progress messages of one Pull.
type progress struct {
	mu sync.Mutex
	fn func(string)
}

func (p *progress) printf(format string, args ...any) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn(fmt.Sprintf(format, args...))
}

// puller pulls from one source (the registry or one of its mirrors): the
// reference, the store and a lazily made authenticated client shared by
// all requests.
type puller struct {
	s    *content.Store
	ref  name.Reference
	opts Options
	prog *progress

	clientMu sync.Mutex
	rt       http.RoundTripper
}

// DefaultBackoff is the retry schedule of a registry request when
// Options.Backoff (here or in push) is nil: 5 tries, from 200ms, tripling.
var DefaultBackoff = remote.Backoff{Duration: 200 * time.Millisecond, Factor: 3, Jitter: 0.1, Steps: 5}

// RetryStatusCodes are the registry answers pulls and pushes retry.
var RetryStatusCodes = []int{http.StatusRequestTimeout, http.StatusTooManyRequests,
	http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}

func newPuller(s *content.Store, r name.Reference, opts Options, prog *progress) *puller {
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
	if opts.Backoff == nil {
		b := DefaultBackoff
		opts.Backoff = &b
	}
	if opts.BlobAttempts <= 0 {
		opts.BlobAttempts = 3
	}
	return &puller{s: s, ref: r, opts: opts, prog: prog}
}

func (p *puller) progress(format string, args ...any) { p.prog.printf(format, args...) }

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
	base := p.opts.Registries.Transport(repo.RegistryStr(), p.opts.Transport)
	retry := transport.NewRetry(base,
		transport.WithRetryBackoff(*p.opts.Backoff),
		transport.WithRetryPredicate(retryable),
		transport.WithRetryStatusCodes(RetryStatusCodes...))
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, retry, []string{repo.Scope(transport.PullScope)})
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
			mt, err := MediaTypeOf(raw)
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
func (p *puller) pull(ctx context.Context, full, via string) (v1.Hash, error) {
	p.progress("resolving %s%s", full, via)
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
	p.progress("pulled %s@%s%s", full, m.digest, via)
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

// fetchBlob streams one blob into the store, checking size and digest. A
// body that arrives broken (cut short, reset, too long, or not matching the
// digest) is fetched again, up to opts.BlobAttempts times in all, waiting
// as opts.Backoff says in between; it is never stored.
func (p *puller) fetchBlob(ctx context.Context, desc v1.Descriptor) error {
	if p.s.Has(desc.Digest) {
		// Stored, but with another size than the manifest says: the
		// manifest is wrong, since stored blobs match their digest.
		return fmt.Errorf("stored blob does not have the %d bytes the manifest says", desc.Size)
	}
	m := p.opts.Meter.Start("download "+shortDigest(desc.Digest.String()), desc.Size)
	err := p.fetchBlobRetrying(ctx, desc, m)
	m.Done(err)
	return err
}

// fetchBlobRetrying is fetchBlob's loop of attempts; m counts each
// attempt's bytes from zero.
func (p *puller) fetchBlobRetrying(ctx context.Context, desc v1.Descriptor, m Meter) error {
	wait := p.opts.Backoff.Duration
	for attempt := 1; ; attempt++ {
		m.Set(0)
		err := p.fetchBlobOnce(ctx, desc, m)
		if err == nil || ctx.Err() != nil {
			return err
		}
		var rerr *requestError
		if errors.As(err, &rerr) && retryable(err) {
			// The retrying transport made Backoff.Steps requests.
			return fmt.Errorf("giving up after %d attempts: %w", p.opts.Backoff.Steps, err)
		}
		if !refetchable(err) {
			return err
		}
		if attempt >= p.opts.BlobAttempts {
			return fmt.Errorf("giving up after %d attempts: %w", attempt, err)
		}
		p.progress("blob %s: %s; fetching it again", desc.Digest, describe(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = time.Duration(float64(wait) * max(p.opts.Backoff.Factor, 1))
	}
}

// errLength is a body whose length is not the descriptor's size.
var errLength = errors.New("body length differs from the manifest's size")

// requestError is a blob request that failed before a body arrived: the
// retrying transport has already spent its budget on it.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// refetchable reports whether a failed blob fetch is worth repeating: the
// body broke off, was reset, or did not have the promised content.
func refetchable(err error) bool {
	var rerr *requestError
	if errors.As(err, &rerr) {
		return false
	}
	return errors.Is(err, errLength) || errors.Is(err, content.ErrDigestMismatch) || retryable(err)
}

// retryable reports whether a request failed transiently: a temporary
// network or registry error, or a connection cut off.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// fetchBlobOnce makes one attempt at fetching a blob into the store.
func (p *puller) fetchBlobOnce(ctx context.Context, desc v1.Descriptor, m Meter) error {
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
	if p.opts.Meter == nil { // else the meter reports the blob
		p.progress("fetching %s (%s)", desc.Digest, HumanSize(desc.Size))
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return &requestError{err}
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return &requestError{err}
	}
	if resp.ContentLength >= 0 && resp.ContentLength != desc.Size {
		return fmt.Errorf("registry sends %d bytes, manifest says %d: %w", resp.ContentLength, desc.Size, errLength)
	}
	// One byte more than promised reveals a longer body without reading an
	// endless one; the store rejects anything that misses the digest.
	body := &errReader{r: meteredReader{r: resp.Body, m: m}}
	_, n, err := p.s.WriteBlob(ctx, io.LimitReader(body, desc.Size+1), desc.Digest)
	if body.err != nil && ctx.Err() == nil {
		return fmt.Errorf("read body: %w", body.err)
	}
	if err != nil {
		return err
	}
	if n != desc.Size {
		return fmt.Errorf("%d bytes, manifest says %d: %w", n, desc.Size, errLength)
	}
	return nil
}

// errReader remembers the first error of r other than io.EOF, so a
// broken download is reported as such rather than as a failed write.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// MediaTypeOf reads the media type a manifest or index declares. Without a
// mediaType field, a "manifests" list makes it an OCI index and
// schemaVersion 2 an OCI manifest, as the OCI spec allows; anything else
// is an error.
func MediaTypeOf(raw []byte) (types.MediaType, error) {
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

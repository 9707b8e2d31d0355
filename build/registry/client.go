package registry

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// DefaultBackoff is the retry schedule of a registry request when
// Options.Backoff is nil: 5 tries, from 200ms, tripling.
var DefaultBackoff = remote.Backoff{Duration: 200 * time.Millisecond, Factor: 3, Jitter: 0.1, Steps: 5}

// RetryStatusCodes are the registry answers every request retries.
var RetryStatusCodes = []int{http.StatusRequestTimeout, http.StatusTooManyRequests,
	http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}

// Options configure a Client. The zero value speaks HTTPS (plain HTTP to
// loopback registries) with the credentials of $DOCKER_CONFIG/config.json
// and no registry configuration file.
type Options struct {
	// Config is the registry configuration (registries.toml): mirrors,
	// plain HTTP and TLS settings per registry. nil means none.
	Config *Config
	// Insecure lists registries ("host" or "host:port") reached over plain
	// HTTP (--insecure-registry). Loopback registries always are.
	Insecure []string
	// Keychain supplies credentials; default authn.DefaultKeychain, which
	// reads $DOCKER_CONFIG/config.json or ~/.docker/config.json and runs
	// the credential helpers it names.
	Keychain authn.Keychain
	// Transport is the HTTP transport under TLS settings, authentication
	// and retries; default remote.DefaultTransport. TLS settings of the
	// Config apply only when it is an *http.Transport.
	Transport http.RoundTripper
	// Backoff is the retry schedule of one request (RetryStatusCodes,
	// reset connections) and of the fetches of a blob whose body arrived
	// broken; default DefaultBackoff.
	Backoff *remote.Backoff
	// BlobAttempts bounds the fetches of one blob whose body arrives cut
	// short, reset or with the wrong digest; default 3.
	BlobAttempts int
	// Jobs bounds the parallel blob transfers of one pull or push;
	// default 4.
	Jobs int
}

// Client reaches registries with one set of settings. It is safe for
// concurrent use and meant to live as long as the command that made it:
// it keeps one authenticated connection per registry and repository.
type Client struct {
	cfg      *Config
	insecure []string
	keychain authn.Keychain
	base     http.RoundTripper
	backoff  remote.Backoff
	attempts int
	jobs     int

	mu         sync.Mutex
	pullers    map[string]*remote.Puller    // by registry host[:port]
	transports map[string]http.RoundTripper // by registry host[:port]
}

// New returns a Client with o's settings, defaults filled in.
func New(o Options) *Client {
	c := &Client{cfg: o.Config, insecure: o.Insecure, keychain: o.Keychain, base: o.Transport,
		backoff: DefaultBackoff, attempts: o.BlobAttempts, jobs: o.Jobs, pullers: map[string]*remote.Puller{},
		transports: map[string]http.RoundTripper{}}
	if c.keychain == nil {
		c.keychain = authn.DefaultKeychain
	}
	if c.base == nil {
		c.base = remote.DefaultTransport
	}
	if o.Backoff != nil {
		c.backoff = *o.Backoff
	}
	if c.attempts <= 0 {
		c.attempts = 3
	}
	if c.jobs <= 0 {
		c.jobs = 4
	}
	return c
}

// Jobs is the number of blobs one pull or push moves at a time.
func (c *Client) Jobs() int { return c.jobs }

// ParseReference parses ref with Docker's defaults ("busybox" is
// docker.io/library/busybox:latest), marking it name.Insecure when its
// registry is spoken to over plain HTTP.
func (c *Client) ParseReference(ref string) (name.Reference, error) {
	return c.cfg.ParseReference(ref, c.insecure)
}

// ParseRegistry reads a registry argument of login or logout:
// host[:port], optionally as a URL ("https://host/v2/"); empty, docker.io
// and index.docker.io mean Docker Hub.
func (c *Client) ParseRegistry(s string) (name.Registry, error) {
	s = trimURL(s)
	if s == "" || s == "docker.io" || s == "index.docker.io" {
		s = name.DefaultRegistry
	}
	var opts []name.Option
	if c.PlainHTTP(s) {
		opts = append(opts, name.Insecure)
	}
	return name.NewRegistry(s, opts...)
}

// PlainHTTP reports whether registry ("host" or "host:port") is spoken to
// over plain HTTP: loopback addresses, localhost, http = true in the
// configuration, and the --insecure-registry list.
func (c *Client) PlainHTTP(registry string) bool {
	return c.cfg.PlainHTTP(registry, c.insecure)
}

// Source is one place a pull may read an image from: a mirror of its
// registry, or the registry itself.
type Source struct {
	// Ref names the image on this source.
	Ref name.Reference
	// Mirror is the mirror as configured ("host[:port][/prefix]"), or ""
	// for the registry itself.
	Mirror string
	// Err is set when the mirror's reference cannot be made; the source
	// is then to be passed over.
	Err error
}

// PullSources returns where a pull of ref looks, in order: the mirrors the
// configuration lists for its registry, then the registry itself (always
// last, and always present). Pushes never use mirrors.
func (c *Client) PullSources(ref name.Reference) []Source {
	var out []Source
	for _, m := range c.cfg.Mirrors(ref.Context().RegistryStr()) {
		mr, err := c.cfg.MirrorReference(ref, m, c.insecure)
		out = append(out, Source{Ref: mr, Mirror: m, Err: err})
	}
	return append(out, Source{Ref: ref})
}

// transport is the base transport with registry's TLS settings, made
// once per registry so that its connections are reused.
func (c *Client) transport(registry string) http.RoundTripper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.transports[registry]
	if !ok {
		t = c.cfg.Transport(registry, c.base)
		c.transports[registry] = t
	}
	return t
}

// options are the remote options of every request to registry:
// credentials, TLS, retries and parallelism.
func (c *Client) options(ctx context.Context, registry string, extra ...remote.Option) []remote.Option {
	return append([]remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.keychain),
		remote.WithTransport(c.transport(registry)),
		remote.WithJobs(c.jobs),
		remote.WithRetryBackoff(c.backoff),
		remote.WithRetryPredicate(retryable),
		remote.WithRetryStatusCodes(RetryStatusCodes...),
	}, extra...)
}

// puller returns the client's remote.Puller for registry, which
// authenticates each repository once and reuses the token.
func (c *Client) puller(registry string) (*remote.Puller, error) {
	opts := c.options(context.Background(), registry)
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pullers[registry]; ok {
		return p, nil
	}
	p, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, err
	}
	c.pullers[registry] = p
	return p, nil
}

// Get fetches the manifest or index ref names from ref's own registry (no
// mirrors: PullSources says where else to look). The digest of a digest
// reference is checked.
func (c *Client) Get(ctx context.Context, ref name.Reference) (*remote.Descriptor, error) {
	p, err := c.puller(ref.Context().RegistryStr())
	if err != nil {
		return nil, err
	}
	return p.Get(ctx, ref)
}

// Referrers lists the manifests whose subject is d, through the
// registry's referrers API or, where it has none, the sha256-<hex> tag
// index (OCI 1.1's fallback).
func (c *Client) Referrers(ctx context.Context, d name.Digest) (v1.ImageIndex, error) {
	return remote.Referrers(d, c.options(ctx, d.Context().RegistryStr())...)
}

// Image returns the image ref names, picking platform out of an index.
// Manifest and config are read at once, layers only when opened; mirrors
// do not apply (the caller asked for this registry).
func (c *Client) Image(ctx context.Context, ref name.Reference, platform v1.Platform) (v1.Image, error) {
	return remote.Image(ref, c.options(ctx, ref.Context().RegistryStr(), remote.WithPlatform(platform))...)
}

// Write uploads img under ref (never to a mirror): blobs the registry
// lacks first, the manifest last. Every request is retried on transient
// failures, and a blob upload that breaks restarts its upload session (see
// MultiWrite). Progress updates go to updates if it is not nil; Write
// closes it.
func (c *Client) Write(ctx context.Context, ref name.Reference, img v1.Image, updates chan<- v1.Update) error {
	return c.MultiWrite(ctx, map[name.Reference]remote.Taggable{ref: img}, updates)
}

// MultiWrite uploads several images or indexes to references of one
// registry (never a mirror), sharing the blobs they have in common. Blobs
// go up Jobs at a time: each is skipped if the repository has it (HEAD),
// mounted when it is a remote.MountableLayer of the same registry and the
// registry allows, else sent in an upload session (POST, PATCH, PUT). A
// request that fails transiently is retried as Backoff says; a failure
// while the body goes up or is committed restarts the blob's session,
// Backoff.Steps sessions at most, and the error after the last names the
// repository, the blob and the tries (*UploadError). Manifests go last,
// children before the indexes that list them. Progress updates go to
// updates if it is not nil; MultiWrite closes it.
func (c *Client) MultiWrite(ctx context.Context, todo map[name.Reference]remote.Taggable, updates chan<- v1.Update) error {
	registry := ""
	for r := range todo {
		if registry != "" && r.Context().RegistryStr() != registry {
			if updates != nil {
				close(updates)
			}
			return fmt.Errorf("write to %s and %s at once: one registry at a time", registry, r.Context().RegistryStr())
		}
		registry = r.Context().RegistryStr()
	}
	return c.write(ctx, todo, updates)
}

// CheckLogin checks user and password against reg the way docker login
// does: the token exchange of a bearer-auth registry and a GET /v2/ must
// both succeed. A refusal is a *transport.Error.
func (c *Client) CheckLogin(ctx context.Context, reg name.Registry, user, pass string) error {
	auth := authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})
	rt, err := transport.NewWithContext(ctx, reg, auth, c.transport(reg.RegistryStr()), nil)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusOK)
}

// trimURL reduces "https://host/v2/" to "host".
func trimURL(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	return s
}

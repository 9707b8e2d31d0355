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
// Everything goes through a registry.Client: mirrors from the registry
// configuration are tried in order before the registry itself, and any
// failure of a mirror falls through to the next source. Requests that fail
// transiently (5xx, 429, reset connections) are retried with backoff, and a
// blob whose body arrives broken (cut short, reset mid-body, or not
// matching its digest) is fetched again a bounded number of times; nothing
// that fails its digest is ever stored.
package pull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"builder/build/progress"
	"builder/build/registry"
	"builder/imageref"
	"builder/snapshot/content"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Options tunes one Pull. The zero value pulls linux/amd64.
type Options struct {
	// Platform selects the image out of an index; default linux/amd64. An
	// empty Variant matches any variant.
	Platform v1.Platform
	// Progress, if set, receives one-line progress messages. Pull calls it
	// from one goroutine at a time.
	Progress func(string)
	// Meter, if set, counts the bytes of each blob download as they
	// arrive, for a live view of bytes and rates.
	Meter registry.MeterFunc
}

// Error is the error of a failed Pull: one line naming the reference, e.g.
// "pull 127.0.0.1:5999/x:latest: connection refused". Unwrap gives the
// cause, so errors.Is(err, content.ErrDigestMismatch) and errors.As(err,
// &transportErr) work.
type Error struct {
	Ref string // the normalized reference, or the input if it did not parse
	Err error
}

func (e *Error) Error() string { return "pull " + e.Ref + ": " + registry.Describe(e.Err) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Size limits for blobs read whole into memory.
const maxManifestSize = 8 << 20

// Pull fetches the image ref names into s through c, trying the mirrors c
// configures for its registry first, and returns its manifest digest. It
// is idempotent. Every blob is verified against its digest before it is
// stored; on any error, blobs fetched so far stay in the store (they are
// valid) but the manifest is not written. Errors are *Error.
func Pull(ctx context.Context, c *registry.Client, s *content.Store, ref string, opts Options) (v1.Hash, error) {
	r, err := c.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, &Error{Ref: ref, Err: err}
	}
	full := imageref.Spell(r)
	prog := &messages{fn: opts.Progress}
	srcs := c.PullSources(r) // the mirrors, then the registry itself
	for _, src := range srcs[:len(srcs)-1] {
		err := src.Err
		if err == nil {
			var d v1.Hash
			if d, err = newPuller(c, s, src.Ref, opts, prog).pull(ctx, full, " from mirror "+src.Mirror); err == nil {
				return d, nil
			}
		}
		if ctx.Err() != nil {
			return v1.Hash{}, &Error{Ref: full, Err: err}
		}
		prog.printf("mirror %s: %s; trying the next source", src.Mirror, registry.Describe(err))
	}
	d, err := newPuller(c, s, r, opts, prog).pull(ctx, full, "")
	if err != nil {
		return v1.Hash{}, &Error{Ref: full, Err: err}
	}
	return d, nil
}

// messages serializes the progress messages of one Pull.
type messages struct {
	mu sync.Mutex
	fn func(string)
}

func (p *messages) printf(format string, args ...any) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn(fmt.Sprintf(format, args...))
}

// puller pulls from one source (the registry or one of its mirrors).
type puller struct {
	c    *registry.Client
	s    *content.Store
	ref  name.Reference
	opts Options
	prog *messages
}

func newPuller(c *registry.Client, s *content.Store, r name.Reference, opts Options, prog *messages) *puller {
	if opts.Platform.OS == "" && opts.Platform.Architecture == "" {
		opts.Platform = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	return &puller{c: c, s: s, ref: r, opts: opts, prog: prog}
}

func (p *puller) progress(format string, args ...any) { p.prog.printf(format, args...) }

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
			mt, err := registry.MediaTypeOf(raw)
			if err != nil {
				return manifest{}, fmt.Errorf("manifest %s: %w", h, err)
			}
			return manifest{raw: raw, mediaType: mt, digest: h}, nil
		}
	}
	desc, err := p.c.Get(ctx, ref)
	if err != nil {
		return manifest{}, err
	}
	// Get checks the digest of a digest reference; a tag's digest is
	// computed from the bytes.
	return manifest{raw: desc.Manifest, mediaType: desc.MediaType, digest: desc.Digest}, nil
}

// Config resolves ref as Pull does, mirrors first, down to the image for
// opts.Platform and returns its config, fetching only manifests and the
// config blob, which is verified and stored (the manifest is not: the
// image's layers are not there). It is what a build check needs of a base
// image. Errors are *Error.
func Config(ctx context.Context, c *registry.Client, s *content.Store, ref string, opts Options) (*v1.ConfigFile, error) {
	r, err := c.ParseReference(ref)
	if err != nil {
		return nil, &Error{Ref: ref, Err: err}
	}
	full := imageref.Spell(r)
	prog := &messages{fn: opts.Progress}
	srcs := c.PullSources(r)
	for i, src := range srcs {
		err := src.Err
		var cfg *v1.ConfigFile
		if err == nil {
			cfg, err = newPuller(c, s, src.Ref, opts, prog).config(ctx)
			if err == nil {
				return cfg, nil
			}
		}
		if i == len(srcs)-1 || ctx.Err() != nil {
			return nil, &Error{Ref: full, Err: err}
		}
		prog.printf("mirror %s: %s; trying the next source", src.Mirror, registry.Describe(err))
	}
	return nil, &Error{Ref: full, Err: errors.New("no source")}
}

// maxConfigSize bounds an image config read by Config.
const maxConfigSize = 8 << 20

// config resolves the reference to one image manifest and fetches its
// config.
func (p *puller) config(ctx context.Context) (*v1.ConfigFile, error) {
	_, im, err := p.resolve(ctx)
	if err != nil {
		return nil, err
	}
	if im.Config.Size > maxConfigSize {
		return nil, fmt.Errorf("image config of %d bytes, more than %d", im.Config.Size, maxConfigSize)
	}
	if err := p.fetchBlobs(ctx, []v1.Descriptor{im.Config}); err != nil {
		return nil, err
	}
	raw, err := p.s.ReadBlob(im.Config.Digest, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", im.Config.Digest, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse config %s: %w", im.Config.Digest, err)
	}
	return cfg, nil
}

// pull resolves the reference down to one image manifest, fetches its
// blobs and stores the manifest last.
func (p *puller) pull(ctx context.Context, full, via string) (v1.Hash, error) {
	p.progress("resolving %s%s", full, via)
	m, im, err := p.resolve(ctx)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.fetchBlobs(ctx, append([]v1.Descriptor{im.Config}, im.Layers...)); err != nil {
		return v1.Hash{}, err
	}
	if _, _, err := p.s.WriteBlob(ctx, bytes.NewReader(m.raw), m.digest); err != nil {
		return v1.Hash{}, fmt.Errorf("store manifest: %w", err)
	}
	if strings.Contains(full, "@"+m.digest.String()) {
		p.progress("pulled %s%s", full, via)
	} else {
		p.progress("pulled %s@%s%s", full, m.digest, via)
	}
	return m.digest, nil
}

// resolve follows the reference down to one image manifest, through
// indexes (which it stores) by platform, and parses it.
func (p *puller) resolve(ctx context.Context) (manifest, *v1.Manifest, error) {
	m, err := p.getManifest(ctx, p.ref)
	if err != nil {
		return manifest{}, nil, err
	}
	for depth := 0; m.mediaType.IsIndex(); depth++ {
		if depth == 4 {
			return manifest{}, nil, errors.New("indexes nested too deep")
		}
		// Keep the index: a later pull by its digest then works offline.
		if _, _, err := p.s.WriteBlob(ctx, bytes.NewReader(m.raw), m.digest); err != nil {
			return manifest{}, nil, fmt.Errorf("store index: %w", err)
		}
		child, err := choosePlatform(m, p.opts.Platform)
		if err != nil {
			return manifest{}, nil, err
		}
		p.progress("platform %s: %s", platformString(p.opts.Platform), child.Digest)
		if m, err = p.getManifest(ctx, p.ref.Context().Digest(child.Digest.String())); err != nil {
			return manifest{}, nil, err
		}
	}
	switch m.mediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return manifest{}, nil, errors.New("docker schema 1 manifests are not supported")
	default:
		return manifest{}, nil, fmt.Errorf("unsupported manifest media type %q", m.mediaType)
	}
	im, err := v1.ParseManifest(bytes.NewReader(m.raw))
	if err != nil {
		return manifest{}, nil, fmt.Errorf("parse manifest %s: %w", m.digest, err)
	}
	return m, im, nil
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

// fetchBlobs downloads the blobs the store lacks, the client's Jobs at a time.
func (p *puller) fetchBlobs(ctx context.Context, blobs []v1.Descriptor) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.c.Jobs())
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

// fetchBlob streams one blob into the store through the client, which
// checks size and digest and fetches a broken body again.
func (p *puller) fetchBlob(ctx context.Context, desc v1.Descriptor) error {
	if p.s.Has(desc.Digest) {
		// Stored, but with another size than the manifest says: the
		// manifest is wrong, since stored blobs match their digest.
		return fmt.Errorf("stored blob does not have the %d bytes the manifest says", desc.Size)
	}
	if p.opts.Meter == nil { // else the meter reports the blob
		p.progress("fetching %s (%s)", desc.Digest, progress.Size(desc.Size))
	}
	m := p.opts.Meter.Start("download "+shortDigest(desc.Digest.String()), desc.Size)
	err := p.c.FetchBlob(ctx, p.s, p.ref.Context(), desc, m, func(err error) {
		p.progress("blob %s: %s; fetching it again", desc.Digest, registry.Describe(err))
	})
	m.Done(err)
	return err
}

// shortDigest is the 12 hex digits docker shows for a digest.
func shortDigest(d string) string {
	if i := len("sha256:") + 12; len(d) > i {
		return d[:i]
	}
	return d
}

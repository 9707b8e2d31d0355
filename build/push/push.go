// Package push uploads images from the content store to registries.
//
// Push sends one image to any number of references through a
// registry.Client (go-containerregistry's pusher, with the client's
// credentials, TLS settings and retries; mirrors never apply): blobs the registry already has are skipped
// (HEAD before upload), blobs go up several at once, transient failures
// (5xx, 429, reset connections) are retried with backoff, and the manifest
// is written last, so a tag never names an incomplete image. When several
// repositories of one registry are named, the first is pushed first and the
// others mount its blobs (cross-repository mount) where the registry allows,
// falling back to uploads where it does not.
package push

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"builder/build/progress"
	"builder/build/registry"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options tunes one Push.
type Options struct {
	// Progress, if set, receives one-line progress messages, from one
	// goroutine at a time.
	Progress func(string)
	// Meter, if set, counts the bytes uploaded to each repository, for a
	// live view of bytes and rates.
	Meter registry.MeterFunc
}

// Error is the error of a failed push: one line naming the reference, e.g.
// "push 127.0.0.1:5001/app:latest: unauthorized: authentication required".
// Unwrap gives the cause.
type Error struct {
	Ref string
	Err error
}

func (e *Error) Error() string { return "push " + e.Ref + ": " + registry.Describe(e.Err) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Result is what a registry now holds for one reference.
type Result struct {
	Ref    string  // the reference as pushed, e.g. 127.0.0.1:5000/app:1
	Digest v1.Hash // manifest digest
}

// Push uploads img to every reference in refs (tags or digests; Docker
// name rules) and returns them with the manifest digest. References are
// grouped by repository; repositories are pushed one after the other (so
// later ones can mount the blobs of the first on the same registry), the
// tags of one repository together. Push is idempotent: a second push of the
// same image uploads nothing but manifests it finds missing. Errors are
// *Error, naming the first reference that failed.
func Push(ctx context.Context, c *registry.Client, img Artifact, refs []string, opts Options) ([]Result, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, &Error{Ref: refs[0], Err: err}
	}
	type repoGroup struct {
		repo name.Repository
		refs []name.Reference
	}
	var groups []*repoGroup
	byRepo := map[string]*repoGroup{}
	for _, s := range refs {
		r, err := c.ParseReference(s)
		if err != nil {
			return nil, &Error{Ref: s, Err: err}
		}
		if d, ok := r.(name.Digest); ok && d.DigestStr() != digest.String() {
			return nil, &Error{Ref: s, Err: fmt.Errorf("the image's digest is %s", digest)}
		}
		key := r.Context().String()
		g, ok := byRepo[key]
		if !ok {
			g = &repoGroup{repo: r.Context()}
			byRepo[key] = g
			groups = append(groups, g)
		}
		g.refs = append(g.refs, r)
	}
	var mu sync.Mutex
	report := func(format string, args ...any) {
		if opts.Progress == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		opts.Progress(fmt.Sprintf(format, args...))
	}
	// first remembers, per registry, a repository that holds the blobs.
	first := map[string]name.Reference{}
	var results []Result
	for _, g := range groups {
		src := remote.Taggable(img)
		reg := g.repo.RegistryStr()
		if from, ok := first[reg]; ok {
			if i, ok := img.(v1.Image); ok {
				src = &mountImage{Image: i, from: from}
			}
		}
		todo := map[name.Reference]remote.Taggable{}
		for _, r := range g.refs {
			todo[r] = src
		}
		names := make([]string, 0, len(g.refs))
		for _, r := range g.refs {
			names = append(names, r.String())
		}
		sort.Strings(names)
		report("pushing %s", strings.Join(names, ", "))
		updates := make(chan v1.Update, 16)
		done := make(chan struct{})
		var meter registry.Meter
		go func() {
			defer close(done)
			last := time.Now()
			for u := range updates {
				if meter == nil {
					meter = opts.Meter.Start("upload "+g.repo.String(), u.Total)
				}
				meter.Set(u.Complete)
				if time.Since(last) > 2*time.Second && u.Total > 0 {
					last = time.Now()
					report("pushing %s: %d%% of %s", g.repo, u.Complete*100/u.Total, progress.Size(u.Total))
				}
			}
		}()
		err := c.MultiWrite(ctx, todo, updates)
		<-done
		if meter != nil {
			meter.Done(err)
		}
		if err != nil {
			return results, &Error{Ref: names[0], Err: err}
		}
		if _, ok := first[reg]; !ok {
			first[reg] = g.refs[0]
		}
		for _, n := range names {
			report("pushed %s@%s", n, digest)
			results = append(results, Result{Ref: n, Digest: digest})
		}
	}
	return results, nil
}

// Artifact is what Push sends: a v1.Image, or a v1.ImageIndex (a
// multi-platform image) with every manifest it lists.
type Artifact interface {
	remote.Taggable
	Digest() (v1.Hash, error)
}

// mountImage is an image whose layers name a repository of the target
// registry that already holds them, so ggcr asks the registry to mount
// them instead of uploading them.
type mountImage struct {
	v1.Image
	from name.Reference
}

// Layers wraps every layer as a remote.MountableLayer.
func (m *mountImage) Layers() ([]v1.Layer, error) {
	ls, err := m.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = m.wrap(l)
	}
	return out, nil
}

// LayerByDigest wraps the layer as a remote.MountableLayer.
func (m *mountImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := m.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return m.wrap(l), nil
}

func (m *mountImage) wrap(l v1.Layer) v1.Layer {
	if mt, err := l.MediaType(); err == nil && !mt.IsDistributable() {
		return l
	}
	return &remote.MountableLayer{Layer: l, Reference: m.from}
}

// MediaType keeps the image's manifest media type.
func (m *mountImage) MediaType() (types.MediaType, error) { return m.Image.MediaType() }

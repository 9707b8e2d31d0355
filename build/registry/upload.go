package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"

	"builder/snapshot/content"
)

// UploadError is a blob upload that failed for good: it names the
// registry repository, the blob and how many upload sessions were tried.
type UploadError struct {
	Repo  string // e.g. 127.0.0.1:5000/app
	Blob  v1.Hash
	Tries int
	Err   error
}

func (e *UploadError) Error() string {
	tries := "1 try"
	if e.Tries != 1 {
		tries = fmt.Sprintf("%d tries", e.Tries)
	}
	return fmt.Sprintf("upload blob %s to %s: giving up after %s: %v", e.Blob, e.Repo, tries, e.Err)
}

// Unwrap returns the cause.
func (e *UploadError) Unwrap() error { return e.Err }

// transient reports whether a request's failure is worth repeating: what
// retryable says, or an answer with one of RetryStatusCodes. A blob that
// the store finds corrupt while it streams never is.
func transient(err error) bool {
	if errors.Is(err, content.ErrCorrupt) {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) && slices.Contains(RetryStatusCodes, terr.StatusCode) {
		return true
	}
	return retryable(err)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retry runs fn until it succeeds, fails with an error that is not
// transient, or has run Backoff.Steps times, waiting as Backoff says in
// between. It returns how many times fn ran.
func (c *Client) retry(ctx context.Context, fn func() error) (int, error) {
	wait := c.backoff.Duration
	steps := max(c.backoff.Steps, 1)
	for try := 1; ; try++ {
		err := fn()
		if err == nil || !transient(err) || try >= steps || ctx.Err() != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return try, err
		}
		if err := sleep(ctx, wait); err != nil {
			return try, err
		}
		wait = time.Duration(float64(wait) * max(c.backoff.Factor, 1))
	}
}

// uploader pushes the blobs of images to one repository: each request
// (the existence check, the session's start) is retried on its own, and a
// transient failure while the body goes up (PATCH) or is committed (PUT)
// restarts that blob's upload session, Backoff.Steps sessions at most.
type uploader struct {
	c    *Client
	repo name.Repository
	hc   *http.Client
	// progress counts bytes as they go up; a restarted session takes its
	// bytes back with a negative count.
	progress func(int64)
}

// newUploader authenticates to repo for pushing (and pulling from the
// repositories in from, for mounts), retrying the registry's handshake.
func (c *Client) newUploader(ctx context.Context, repo name.Repository, from []name.Repository, progress func(int64)) (*uploader, error) {
	auth, err := authn.Resolve(ctx, c.keychain, repo)
	if err != nil {
		return nil, err
	}
	scopes := []string{repo.Scope(transport.PushScope)}
	for _, f := range from {
		scopes = append(scopes, f.Scope(transport.PullScope))
	}
	var rt http.RoundTripper
	_, err = c.retry(ctx, func() (err error) {
		rt, err = transport.NewWithContext(ctx, repo.Registry, auth, c.transport(repo.RegistryStr()), scopes)
		return err
	})
	if err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(int64) {}
	}
	return &uploader{c: c, repo: repo, hc: &http.Client{Transport: rt}, progress: progress}, nil
}

func (u *uploader) url(path string) string {
	return u.repo.Scheme() + "://" + u.repo.RegistryStr() + "/v2/" + u.repo.RepositoryStr() + path
}

// do makes one request and checks its status against ok.
func (u *uploader) do(ctx context.Context, method, target string, body io.Reader, size int64, ok ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := u.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, ok...); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// exists asks whether the repository has blob d (HEAD), retrying; it
// returns how many requests it made.
func (u *uploader) exists(ctx context.Context, d v1.Hash) (bool, int, error) {
	var found bool
	tries, err := u.c.retry(ctx, func() error {
		resp, err := u.do(ctx, http.MethodHead, u.url("/blobs/"+d.String()), nil, 0, http.StatusOK, http.StatusNotFound)
		if err != nil {
			return err
		}
		resp.Body.Close()
		found = resp.StatusCode == http.StatusOK
		return nil
	})
	return found, tries, err
}

// start opens an upload session (POST), or mounts d from the repository
// from when it is not "", retrying. It returns where the body goes, or ""
// when the registry mounted the blob.
func (u *uploader) start(ctx context.Context, d v1.Hash, from string) (string, error) {
	target := u.url("/blobs/uploads/")
	if from != "" {
		target += "?" + url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	}
	var loc string
	_, err := u.c.retry(ctx, func() error {
		resp, err := u.do(ctx, http.MethodPost, target, nil, 0, http.StatusCreated, http.StatusAccepted)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			loc = ""
			return nil
		}
		loc, err = nextLocation(resp)
		return err
	})
	return loc, err
}

// nextLocation resolves the Location of an upload response against the
// request. A registry may send the body elsewhere (a storage service),
// but not to a loopback, private or link-local address literal other
// than its own host, and only over HTTP(S).
func nextLocation(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", errors.New("upload response without a Location")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("upload location: %w", err)
	}
	abs := resp.Request.URL.ResolveReference(u)
	if abs.Scheme != "http" && abs.Scheme != "https" {
		return "", fmt.Errorf("upload location %q: not HTTP", loc)
	}
	if host := abs.Hostname(); host != resp.Request.URL.Hostname() {
		if ip := net.ParseIP(host); ip != nil && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
			ip.IsLinkLocalMulticast() || ip.IsUnspecified()) {
			return "", fmt.Errorf("upload location %q: the registry may not send the body to %s", loc, host)
		}
	}
	return abs.String(), nil
}

// withDigest adds digest=d to an upload location.
func withDigest(loc string, d v1.Hash) (string, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// upload makes sure the repository has blob l: skipped if it has it,
// mounted from the repository from (when not "") if the registry allows,
// uploaded otherwise. Each session sends the body (PATCH) and commits it
// (PUT, repeated on its own on transient failures); a transient failure
// of the body restarts the session, after checking that the registry did
// not take the blob after all.
func (u *uploader) upload(ctx context.Context, l blob, from string) error {
	d, size := l.digest, l.size
	if ok, tries, err := u.exists(ctx, d); err != nil {
		return &UploadError{Repo: u.repo.String(), Blob: d, Tries: tries, Err: err}
	} else if ok {
		u.progress(size)
		return nil
	}
	wait := u.c.backoff.Duration
	steps := max(u.c.backoff.Steps, 1)
	for try := 1; ; try++ {
		sent, err := u.session(ctx, l, from)
		if err == nil {
			return nil
		}
		u.progress(-sent)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A commit may have landed although its answer was lost (and
		// its repetition then finds no session).
		if ok, _, herr := u.exists(ctx, d); herr == nil && ok {
			u.progress(size)
			return nil
		}
		if !transient(err) || try >= steps {
			return &UploadError{Repo: u.repo.String(), Blob: d, Tries: try, Err: err}
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		wait = time.Duration(float64(wait) * max(u.c.backoff.Factor, 1))
	}
}

// session is one upload session of l; it returns the bytes it counted.
func (u *uploader) session(ctx context.Context, l blob, from string) (int64, error) {
	loc, err := u.start(ctx, l.digest, from)
	if err != nil || loc == "" {
		if err == nil {
			u.progress(l.size)
			return l.size, nil
		}
		return 0, err
	}
	rc, err := l.open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	body := &countingReader{r: rc, add: u.progress}
	resp, err := u.do(ctx, http.MethodPatch, loc, body, l.size, http.StatusAccepted, http.StatusNoContent, http.StatusCreated)
	if body.err != nil && !errors.Is(body.err, io.EOF) {
		// The store's verdict on the blob, not the network's.
		return body.n, body.err
	}
	if err != nil {
		return body.n, err
	}
	loc, err = nextLocation(resp)
	resp.Body.Close()
	if err != nil {
		return body.n, err
	}
	if body.n != l.size {
		return body.n, fmt.Errorf("sent %d bytes of %d", body.n, l.size)
	}
	commit, err := withDigest(loc, l.digest)
	if err != nil {
		return body.n, err
	}
	// The bytes are with the registry: the commit alone is repeated.
	_, err = u.c.retry(ctx, func() error {
		resp, err := u.do(ctx, http.MethodPut, commit, nil, 0, http.StatusCreated)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return body.n, err
}

// countingReader reports the bytes read through it and keeps the first
// read error.
type countingReader struct {
	r   io.Reader
	n   int64
	add func(int64)
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.add(int64(n))
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// blob is one blob to upload.
type blob struct {
	digest v1.Hash
	size   int64
	open   func() (io.ReadCloser, error)
	from   string // a repository of the same registry to mount it from
}

// blobsOf lists the config and distributable layers of every image in t
// (an image, or an index and the images and indexes below it), and calls
// manifest for each child manifest, children before parents, so they
// can be put before what refers to them.
func blobsOf(t remote.Taggable, add func(blob), manifest func(v1.Hash, remote.Taggable) error) error {
	switch x := t.(type) {
	case v1.ImageIndex:
		im, err := x.IndexManifest()
		if err != nil {
			return err
		}
		for _, desc := range im.Manifests {
			var child remote.Taggable
			if desc.MediaType.IsIndex() {
				child, err = x.ImageIndex(desc.Digest)
			} else {
				child, err = x.Image(desc.Digest)
			}
			if err != nil {
				return err
			}
			if err := blobsOf(child, add, manifest); err != nil {
				return err
			}
			if err := manifest(desc.Digest, child); err != nil {
				return err
			}
		}
	case v1.Image:
		cl, err := partial.ConfigLayer(x)
		if err != nil {
			return err
		}
		layers, err := x.Layers()
		if err != nil {
			return err
		}
		for _, l := range append([]v1.Layer{cl}, layers...) {
			if mt, err := l.MediaType(); err == nil && !mt.IsDistributable() {
				continue
			}
			b, err := blobOf(l)
			if err != nil {
				return err
			}
			if ml, ok := l.(*remote.MountableLayer); ok && ml.Reference.Context().RegistryStr() != "" {
				b.from = ml.Reference.Context().RepositoryStr()
			}
			add(b)
		}
	default:
		return fmt.Errorf("cannot push a %T", t)
	}
	return nil
}

// write uploads the blobs of every image in todo (all in repositories of
// one registry), Jobs at a time, then puts child manifests and finally
// the manifests todo names. Updates, if not nil, receive the bytes sent
// so far and are closed at the end.
func (c *Client) write(ctx context.Context, todo map[name.Reference]remote.Taggable, updates chan<- v1.Update) (err error) {
	if updates != nil {
		defer close(updates)
	}
	type repoWork struct {
		repo      name.Repository
		blobs     []blob
		seen      map[v1.Hash]bool
		manifests []name.Reference
		children  map[v1.Hash]remote.Taggable
		order     []v1.Hash
	}
	var work []*repoWork
	byRepo := map[string]*repoWork{}
	var total int64
	refs := make([]name.Reference, 0, len(todo))
	for r := range todo {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b name.Reference) int { return cmp.Compare(a.String(), b.String()) })
	for _, r := range refs {
		w, ok := byRepo[r.Context().String()]
		if !ok {
			w = &repoWork{repo: r.Context(), seen: map[v1.Hash]bool{}, children: map[v1.Hash]remote.Taggable{}}
			byRepo[r.Context().String()] = w
			work = append(work, w)
		}
		w.manifests = append(w.manifests, r)
		err := blobsOf(todo[r], func(b blob) {
			if !w.seen[b.digest] {
				w.seen[b.digest] = true
				w.blobs = append(w.blobs, b)
				total += b.size
			}
		}, func(d v1.Hash, t remote.Taggable) error {
			if _, ok := w.children[d]; !ok {
				w.children[d] = t
				w.order = append(w.order, d)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	var mu sync.Mutex
	var done int64
	progress := func(n int64) {
		if updates == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		done += n
		select {
		case updates <- v1.Update{Total: total, Complete: max(done, 0)}:
		default: // a slow reader misses intermediate counts, never the work
		}
	}
	for _, w := range work {
		if c.haveManifests(ctx, w.manifests, todo) {
			for _, b := range w.blobs {
				progress(b.size)
			}
			continue
		}
		var from []name.Repository
		for _, b := range w.blobs {
			if b.from != "" {
				if fr, err := name.NewRepository(b.from, nameOptions(w.repo)...); err == nil && !slices.Contains(from, fr) {
					from = append(from, fr)
				}
			}
		}
		up, err := c.newUploader(ctx, w.repo, from, progress)
		if err != nil {
			return err
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(c.jobs)
		for _, b := range w.blobs {
			g.Go(func() error { return up.upload(gctx, b, b.from) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
		for _, d := range w.order {
			if err := c.PutManifest(ctx, w.repo.Digest(d.String()), w.children[d]); err != nil {
				return err
			}
		}
		for _, r := range w.manifests {
			if err := c.PutManifest(ctx, r, todo[r]); err != nil {
				return err
			}
		}
	}
	if updates != nil {
		updates <- v1.Update{Total: total, Complete: total} // never skipped
	}
	return nil
}

// haveManifests reports whether the registry already serves every one of
// refs with the digest todo gives it (a repeated push then sends nothing).
// Any doubt, a failed HEAD included, is a no.
func (c *Client) haveManifests(ctx context.Context, refs []name.Reference, todo map[name.Reference]remote.Taggable) bool {
	for _, r := range refs {
		t, ok := todo[r].(interface{ Digest() (v1.Hash, error) })
		if !ok {
			return false
		}
		want, err := t.Digest()
		if err != nil {
			return false
		}
		desc, err := remote.Head(r, c.options(ctx, r.Context().RegistryStr())...)
		if err != nil || desc.Digest != want {
			return false
		}
	}
	return true
}

// nameOptions parses names of repo's registry the way repo was parsed.
func nameOptions(repo name.Repository) []name.Option {
	opts := []name.Option{name.WithDefaultRegistry(repo.RegistryStr())}
	if repo.Scheme() == "http" {
		opts = append(opts, name.Insecure)
	}
	return opts
}

// WriteBlobs uploads blobs to repo as MultiWrite uploads an image's (each
// skipped when the repository has it, each request retried, a broken
// session restarted), Jobs at a time, and writes no manifest.
func (c *Client) WriteBlobs(ctx context.Context, repo name.Repository, blobs []partial.CompressedLayer) error {
	up, err := c.newUploader(ctx, repo, nil, nil)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for _, l := range blobs {
		b, err := blobOf(l)
		if err != nil {
			return err
		}
		g.Go(func() error { return up.upload(gctx, b, "") })
	}
	return g.Wait()
}

// blobOf describes l for an upload.
func blobOf(l partial.CompressedLayer) (blob, error) {
	d, err := l.Digest()
	if err != nil {
		return blob{}, err
	}
	size, err := l.Size()
	if err != nil {
		return blob{}, err
	}
	return blob{digest: d, size: size, open: l.Compressed}, nil
}

// PutManifest writes the manifest of t under ref, retried like every
// request; the blobs it names must be in the repository already.
func (c *Client) PutManifest(ctx context.Context, ref name.Reference, t remote.Taggable) error {
	return remote.Put(ref, t, c.options(ctx, ref.Context().RegistryStr())...)
}

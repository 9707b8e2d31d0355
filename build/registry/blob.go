package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/snapshot/content"
)

// ErrLength is a blob body whose length is not the size its descriptor
// gives.
var ErrLength = errors.New("body length differs from the manifest's size")

// FetchBlob streams blob desc of repo into s, checking its size and digest
// while it is written: a blob that does not match is never stored (the
// error then wraps content.ErrDigestMismatch or ErrLength). A body that
// arrives broken (cut short, reset, too long or not matching the digest) is
// fetched again, up to Options.BlobAttempts times in all, waiting as
// Options.Backoff says in between, and refetch (if not nil) is told why
// before each new fetch; a request the registry refuses is retried by the
// transport alone. m (nil for none) counts each attempt's bytes from zero.
// FetchBlob is idempotent: a stored blob is simply stored again.
func (c *Client) FetchBlob(ctx context.Context, s *content.Store, repo name.Repository, desc v1.Descriptor, m Meter, refetch func(error)) error {
	if m == nil {
		m = noMeter{}
	}
	wait := c.backoff.Duration
	for attempt := 1; ; attempt++ {
		m.Set(0)
		err := c.fetchBlobOnce(ctx, s, repo, desc, m)
		if err == nil || ctx.Err() != nil {
			return err
		}
		var rerr *requestError
		if errors.As(err, &rerr) {
			if retryable(err) {
				// The retrying transport made Backoff.Steps requests.
				return fmt.Errorf("giving up after %d attempts: %w", c.backoff.Steps, rerr.err)
			}
			return rerr.err
		}
		if !refetchable(err) {
			return err
		}
		if attempt >= c.attempts {
			return fmt.Errorf("giving up after %d attempts: %w", attempt, err)
		}
		if refetch != nil {
			refetch(err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = time.Duration(float64(wait) * max(c.backoff.Factor, 1))
	}
}

// fetchBlobOnce makes one attempt at fetching a blob into the store,
// through the registry's remote.Puller (remote.Layer).
func (c *Client) fetchBlobOnce(ctx context.Context, s *content.Store, repo name.Repository, desc v1.Descriptor, m Meter) error {
	p, err := c.puller(repo.RegistryStr())
	if err != nil {
		return err
	}
	l, err := p.Layer(ctx, repo.Digest(desc.Digest.String()))
	if err != nil {
		return &requestError{err}
	}
	rc, err := l.Compressed()
	if err != nil {
		return &requestError{err}
	}
	defer rc.Close()
	// One byte more than promised reveals a longer body without reading an
	// endless one; the store rejects anything that misses the digest.
	body := &bodyReader{r: meteredReader{r: rc, m: m}}
	_, n, err := s.WriteBlob(ctx, io.LimitReader(body, desc.Size+1), desc.Digest)
	if body.err != nil && ctx.Err() == nil {
		return fmt.Errorf("read body: %w", body.err)
	}
	if err != nil {
		return err
	}
	if n != desc.Size {
		return fmt.Errorf("%d bytes, manifest says %d: %w", n, desc.Size, ErrLength)
	}
	return nil
}

// bodyReader reads a blob body for the store. It remembers the first
// network error, so a broken download is reported as such rather than as
// a failed write. Any other error ends the body as io.EOF: that is
// go-containerregistry's verifying reader reporting, untyped, a digest
// that does not match, and the store, which hashes the same bytes, then
// rejects the blob with the typed content.ErrDigestMismatch.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == nil || err == io.EOF {
		return n, err
	}
	if !retryable(err) {
		return n, io.EOF
	}
	if b.err == nil {
		b.err = err
	}
	return n, err
}

// requestError is a blob request that failed before a body arrived: the
// retrying transport has already spent its budget on it.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// refetchable reports whether a failed blob fetch is worth repeating: the
// body broke off, was reset, or did not have the promised content.
func refetchable(err error) bool {
	return errors.Is(err, ErrLength) || errors.Is(err, content.ErrDigestMismatch) || retryable(err)
}

// retryable reports whether a request failed transiently: a temporary
// network or registry error, or a connection cut off. It is the retry
// predicate of every request, and says which broken bodies are fetched
// again.
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

// OpenBlob opens blob d of repo on the registry repo names (no mirrors),
// for blobs read whole into memory rather than stored. go-containerregistry
// checks the bytes against d as they are read and reports a mismatch as an
// error at the end; callers that read less than all of it check it
// themselves.
func (c *Client) OpenBlob(ctx context.Context, repo name.Repository, d v1.Hash) (io.ReadCloser, error) {
	p, err := c.puller(repo.RegistryStr())
	if err != nil {
		return nil, err
	}
	l, err := p.Layer(ctx, repo.Digest(d.String()))
	if err != nil {
		return nil, err
	}
	return l.Compressed()
}

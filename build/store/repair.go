package store

import (
	"context"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/snapshot/content"
)

// Fetcher fetches the image named ref, pinned to its manifest digest,
// into the store again: the blobs the store lacks come from the image's
// registry. It is how Repair replaces blobs it could not keep.
type Fetcher func(ctx context.Context, ref string, manifest v1.Hash) error

// RepairReport says what Repair did and what it could not repair.
type RepairReport struct {
	Removed     []v1.Hash // corrupt blobs removed from the store
	Invalidated []string  // cache records dropped, so that their steps run again
	Fetched     []string  // images whose missing blobs were fetched again
	Unrepaired  []Problem // what is still wrong afterwards (Check's findings)
}

// Repair makes the store consistent again as far as it can: it removes
// every blob whose bytes do not hash to its name, drops the cache records
// that name a missing layer blob (or do not parse), so that the next build
// runs their steps again, and fetches again, with fetch (nil for none),
// tagged images that lack blobs no cache record built; then it checks the
// whole store and reports what is still wrong, such as a built image whose
// layer is gone (rebuild it). It holds the store lock exclusively, like
// Prune. The error is for failures to run at all.
func (s *Store) Repair(ctx context.Context, fetch Fetcher) (RepairReport, error) {
	unlock, err := s.lock(ctx, true)
	if err != nil {
		return RepairReport{}, err
	}
	defer unlock()
	var rep RepairReport
	err = s.blobs.Walk(ctx, func(d v1.Hash, _ int64) error {
		if err := s.blobs.Verify(d); errors.Is(err, content.ErrCorrupt) {
			rep.Removed = append(rep.Removed, d)
		}
		return ctx.Err()
	})
	if err != nil {
		return rep, err
	}
	built := map[v1.Hash]bool{} // layers cache records made
	var drop []string
	err = s.cache.Walk(func(r Record) error {
		switch {
		case r.Err != nil:
			drop = append(drop, r.Key)
		case r.Empty:
		default:
			built[r.Layer] = true
			if !s.blobs.Has(r.Layer) {
				drop = append(drop, r.Key)
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	for _, k := range drop {
		if err := s.cache.Delete(k); err != nil {
			return rep, fmt.Errorf("drop cache record %s: %w", k, err)
		}
		rep.Invalidated = append(rep.Invalidated, k)
	}
	if _, err := s.blobs.CleanSidecars(true); err != nil {
		return rep, err
	}
	failed, err := s.refetch(ctx, fetch, built, &rep)
	if err != nil {
		return rep, err
	}
	if rep.Unrepaired, err = s.check(ctx); err != nil {
		return rep, err
	}
	rep.Unrepaired = append(rep.Unrepaired, failed...)
	return rep, nil
}

// refetch fetches again the tagged images that lack blobs, unless one of
// those blobs is a layer a build made, which no registry has. It returns
// the fetches that failed.
func (s *Store) refetch(ctx context.Context, fetch Fetcher, built map[v1.Hash]bool, rep *RepairReport) ([]Problem, error) {
	if fetch == nil {
		return nil, nil
	}
	entries, err := s.index.List()
	if err != nil {
		return nil, err
	}
	var failed []Problem
	for _, e := range entries {
		missing, fetchable := 0, true
		s.imageBlobs(e.Digest, func(v1.Hash) {}, nil, func(err error) {
			missing++
			var me *missingError
			if errors.As(err, &me) && built[me.Blob] {
				fetchable = false
			}
		})
		if missing == 0 || !fetchable {
			continue
		}
		if err := fetch(ctx, e.Name, e.Digest); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			failed = append(failed, Problem{Object: "image " + e.Name, Err: fmt.Errorf("fetch it again: %w", err)})
			continue
		}
		rep.Fetched = append(rep.Fetched, e.Name)
	}
	return failed, nil
}

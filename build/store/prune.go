package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/record"
	"builder/imageref"
	"builder/internal/atomicfile"
)

// PruneOptions choose what Prune removes besides unreferenced data.
type PruneOptions struct {
	All         bool          // drop every cache record and cache mount (tagged images stay)
	Until       time.Duration // drop cache records and cache mounts unused for longer than this
	KeepStorage int64         // then evict least recently used ones until the store is at most this big
	Keep        []v1.Hash     // manifests kept as if they were tagged (a build's untagged result)
	// Grace keeps blobs written and cache records used less than this long
	// ago. Automatic GC sets it: another process's build that has just
	// finished may not have exported its (untagged) result yet.
	Grace time.Duration
}

// PruneReport says what Prune removed.
type PruneReport struct {
	Records, Blobs, Snapshots, CacheMounts int
	BuildRecords                           int   // build records beyond the limits (see package record)
	Reclaimed                              int64 // bytes of blobs, snapshots and cache mounts removed
}

// Prune collects garbage under the exclusive store lock (it waits for
// running builds to finish, and builds wait for it). It drops cache
// records as o asks and those whose layer blob is gone, then deletes every
// blob no tagged image or remaining record references, every snapshot no
// tagged image or record's layer chain needs, dropped cache mounts, and
// temporary files killed processes left. With KeepStorage set and the
// store still larger, it drops the snapshots only cache records need
// (they are unpacked again from blobs on demand) and then records and
// cache mounts, least recently used first. Prune is idempotent.
func (s *Store) Prune(ctx context.Context, o PruneOptions) (PruneReport, error) {
	unlock, err := s.lock(ctx, true)
	if err != nil {
		return PruneReport{}, err
	}
	defer unlock()
	rep, err := s.prune(ctx, o)
	if err != nil {
		return rep, err
	}
	c, err := s.collectRecords()
	rep.BuildRecords, rep.Reclaimed = c.Records, rep.Reclaimed+c.Bytes
	return rep, err
}

// collectRecords removes the build records beyond the store's limits.
func (s *Store) collectRecords() (record.Collected, error) {
	c, err := record.Collect(s.root, s.records, false)
	if err != nil {
		return c, fmt.Errorf("collect build records: %w", err)
	}
	return c, nil
}

// RemoveImage untags name and then prunes what nothing references any
// more (cache records keep their layers).
func (s *Store) RemoveImage(ctx context.Context, name string) (PruneReport, error) {
	return s.RemoveNames(ctx, []string{name})
}

// RemoveNames untags every name, then prunes once what nothing references
// any more. Names untagged before an unknown one stay untagged.
func (s *Store) RemoveNames(ctx context.Context, names []string) (PruneReport, error) {
	unlock, err := s.lock(ctx, true)
	if err != nil {
		return PruneReport{}, err
	}
	defer unlock()
	for _, name := range names {
		full, err := imageref.Normalize(name)
		if err != nil {
			return PruneReport{}, err
		}
		if err := s.index.Untag(full); err != nil {
			return PruneReport{}, err
		}
	}
	return s.prune(ctx, PruneOptions{})
}

// prune is Prune under a lock the caller holds.
func (s *Store) prune(ctx context.Context, o PruneOptions) (PruneReport, error) {
	g, err := s.scan(ctx, o.Keep)
	if err != nil {
		return PruneReport{}, err
	}
	return s.pruneGraph(ctx, g, o)
}

// pruneGraph is prune on the graph scan found.
func (s *Store) pruneGraph(ctx context.Context, g *graph, o PruneOptions) (PruneReport, error) {
	var rep PruneReport
	now := time.Now()
	old := func(t time.Time) bool { return o.Until > 0 && now.Sub(t) > o.Until }
	drop := map[string]bool{}
	dropRecord := func(r Record) {
		drop[r.Key] = true
		if r.Err == nil && !r.Empty {
			g.refs[r.Layer]--
		}
	}
	var kept []Record
	for _, r := range g.records {
		if o.All || old(r.Used) || r.Err != nil || (!r.Empty && g.blobs[r.Layer] == 0 && !s.blobs.Has(r.Layer)) {
			dropRecord(r)
			continue
		}
		kept = append(kept, r)
	}
	dropMount := map[string]bool{}
	var keptMounts []cacheMount
	for _, m := range g.mounts {
		if o.All || old(m.used) {
			dropMount[m.path] = true
			continue
		}
		keptMounts = append(keptMounts, m)
	}
	recordSnaps := true
	if o.KeepStorage > 0 {
		recordSnaps = s.evict(g, o, kept, keptMounts, dropRecord, dropMount)
		kept = kept[:0:0]
		for _, r := range g.records {
			if !drop[r.Key] {
				kept = append(kept, r)
			}
		}
	}
	// Records go first, so that no record ever names a deleted blob.
	for _, r := range g.records {
		if drop[r.Key] {
			if err := s.cache.Delete(r.Key); err != nil {
				return rep, err
			}
			rep.Records++
		}
	}
	for d, size := range g.blobs {
		if g.pinned[d] || g.refs[d] > 0 || s.young(d, o.Grace) {
			continue
		}
		if err := s.blobs.Delete(d); err != nil {
			return rep, err
		}
		rep.Blobs++
		rep.Reclaimed += size
	}
	// Delete removed the sidecars of the blobs above; these are the ones a
	// crash or a hand left without a blob.
	if _, err := s.blobs.CleanSidecars(false); err != nil {
		return rep, err
	}
	n, freed, err := s.pruneSnapshots(ctx, g, s.neededSnapshots(g, kept, recordSnaps))
	rep.Snapshots, rep.Reclaimed = n, rep.Reclaimed+freed
	if err != nil {
		return rep, err
	}
	for _, m := range g.mounts {
		if dropMount[m.path] {
			if err := os.RemoveAll(m.path); err != nil {
				return rep, fmt.Errorf("remove cache mount: %w", err)
			}
			rep.CacheMounts++
			rep.Reclaimed += m.size
		}
	}
	return rep, s.cleanLeftovers(o.All)
}

// evict marks least recently used cache records and cache mounts (among
// kept and keptMounts) for dropping until the store fits o.KeepStorage,
// sparing those used within o.Grace. It reports whether the snapshots only
// the kept records need may stay; when the store is over the limit they go
// first, since they are unpacked again from blobs on demand.
func (s *Store) evict(g *graph, o PruneOptions, kept []Record, keptMounts []cacheMount, dropRecord func(Record), dropMount map[string]bool) bool {
	liveBlobs := func() int64 {
		var n int64
		for d, size := range g.blobs {
			if g.pinned[d] || g.refs[d] > 0 {
				n += size
			}
		}
		return n
	}
	snapBytes := func(keepRecords bool) int64 {
		var n int64
		for _, name := range s.neededSnapshots(g, kept, keepRecords) {
			for _, in := range g.snaps {
				if in.Name == name {
					n += dirSize(in.Dir)
				}
			}
		}
		return n
	}
	var mountBytes int64
	for _, m := range keptMounts {
		mountBytes += m.size
	}
	recordSnaps := true
	total := liveBlobs() + snapBytes(true) + mountBytes
	if total > o.KeepStorage {
		recordSnaps = false
		total = liveBlobs() + snapBytes(false) + mountBytes
	}
	type victim struct {
		used time.Time
		rec  *Record
		m    *cacheMount
	}
	var vs []victim
	for i := range kept {
		vs = append(vs, victim{used: kept[i].Used, rec: &kept[i]})
	}
	for i := range keptMounts {
		vs = append(vs, victim{used: keptMounts[i].used, m: &keptMounts[i]})
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].used.Before(vs[j].used) })
	for _, v := range vs {
		if total <= o.KeepStorage || (o.Grace > 0 && time.Since(v.used) < o.Grace) {
			break // oldest first: the rest are as recent
		}
		if v.m != nil {
			dropMount[v.m.path] = true
			total -= v.m.size
			continue
		}
		dropRecord(*v.rec)
		if d := v.rec.Layer; !v.rec.Empty && g.refs[d] == 0 && !g.pinned[d] {
			total -= g.blobs[d]
		}
	}
	return recordSnaps
}

// cleanLeftovers removes the temporary files killed processes left and,
// with all, the context stat caches and the cache's memos. It runs under
// the exclusive lock, so nothing it removes is in use.
func (s *Store) cleanLeftovers(all bool) error {
	if all {
		if err := os.RemoveAll(filepath.Join(s.root, ContextStatDir)); err != nil {
			return fmt.Errorf("remove context stat caches: %w", err)
		}
		if err := s.cache.DropMemos(); err != nil {
			return err
		}
	}
	s.cache.CleanTemp()
	if ents, err := os.ReadDir(filepath.Join(s.root, ContextStatDir)); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
				_ = os.Remove(filepath.Join(s.root, ContextStatDir, e.Name()))
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(s.root, TempDir)); err == nil {
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(s.root, TempDir, e.Name()))
		}
	}
	return nil
}

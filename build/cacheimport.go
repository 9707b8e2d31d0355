package build

import (
	"context"
	"crypto/sha256"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/cache"
	"builder/build/cacheio"
	"builder/build/internal/flight"
	"builder/export"
	"builder/snapshot/archive"
)

// cacheState is what one build knows about shared caches: the records and
// cache mounts imported with --cache-from, and what --cache-to will need
// (the records each stage used, the cache mounts the build named). A build
// without cache flags has none (job.cio is nil). It is safe for concurrent
// use by the build's stages.
type cacheState struct {
	imports []*cacheio.Cache

	mu        sync.Mutex
	records   map[cache.Key]cache.Record      // first import that has a key wins
	digests   map[v1.Hash]*cacheio.Cache      // where each imported blob comes from
	mounts    map[string]importedMount        // imported cache mounts by id
	restored  map[string]bool                 // cache mounts this build restored or found full
	fetches   flight.Group[v1.Hash, struct{}] // one fetch per blob at a time
	stages    map[stageSlot][]cache.Record    // records each stage of each platform applied, in order
	platforms []string                        // the build's platforms' job labels, in order
	mountIDs  map[string]*runMount            // cache mounts the build's RUNs name
	pending   map[v1.Hash][]cache.Record      // imported records to keep locally once their blob is here
	sums      map[string]string               // imported COPY source checksums by memo key
	usedSums  map[string]string               // the checksums this build's COPY steps used, for --cache-to
	progress  func(format string, a ...any)   // build log
}

// stageSlot is one stage of one platform's job (its label; "" for a
// single-platform build).
type stageSlot struct {
	platform string
	index    int
}

type importedMount struct {
	m   cacheio.Mount
	src *cacheio.Cache
}

// startCache imports the --cache-from caches (manifest and config only)
// and sets the build's cache state, j.cio. A cache that cannot be imported
// is a warning, as in BuildKit: the build runs without it.
func (j *job) startCache(ctx context.Context) {
	if len(j.o.CacheFrom) == 0 && len(j.o.CacheTo) == 0 {
		return
	}
	cs := &cacheState{records: map[cache.Key]cache.Record{}, digests: map[v1.Hash]*cacheio.Cache{},
		mounts: map[string]importedMount{}, restored: map[string]bool{},
		stages: map[stageSlot][]cache.Record{}, mountIDs: map[string]*runMount{}, pending: map[v1.Hash][]cache.Record{},
		sums: map[string]string{}, usedSums: map[string]string{},
		progress: j.progress.Printf}
	for _, spec := range j.o.CacheFrom {
		sp := j.progress.Step("importing cache manifest from " + spec.String())
		c, err := cacheio.Import(ctx, spec, j.b.registry)
		if err != nil {
			sp.Done()
			j.progress.Printf("WARNING: %v", err)
			continue
		}
		sp.Done()
		cs.add(c)
	}
	j.cio = cs
}

// add indexes an imported cache's records and mounts.
func (cs *cacheState) add(c *cacheio.Cache) {
	cs.imports = append(cs.imports, c)
	for _, r := range c.Config.Records {
		if _, ok := cs.records[r.Key]; ok {
			continue
		}
		cs.records[r.Key] = r
		if !r.Empty {
			if _, ok := cs.digests[r.Digest]; !ok {
				cs.digests[r.Digest] = c
			}
		}
	}
	for k, sum := range c.Config.Sums {
		if _, ok := cs.sums[k]; !ok {
			cs.sums[k] = sum
		}
	}
	for _, m := range c.Config.Mounts {
		if _, ok := cs.mounts[m.ID]; !ok {
			cs.mounts[m.ID] = importedMount{m: m, src: c}
		}
		if _, ok := cs.digests[m.Digest]; !ok {
			cs.digests[m.Digest] = c
		}
	}
}

// importedSum returns the COPY source checksum an imported cache has
// under memo key mk.
func (j *job) importedSum(mk string) (string, bool) {
	if j.cio == nil {
		return "", false
	}
	j.cio.mu.Lock()
	defer j.cio.mu.Unlock()
	sum, ok := j.cio.sums[mk]
	return sum, ok
}

// noteSum remembers a COPY source checksum the build used, for --cache-to.
func (j *job) noteSum(mk, sum string) {
	if j.cio == nil || len(j.o.CacheTo) == 0 {
		return
	}
	j.cio.mu.Lock()
	j.cio.usedSums[mk] = sum
	j.cio.mu.Unlock()
}

// lookupImported returns the imported record for key. Its blob is fetched
// later, only if something needs it; until then the record is kept in
// memory only, since a local record must name stored data. An empty
// record names no data and is kept locally at once.
func (j *job) lookupImported(key cache.Key) (cache.Record, bool) {
	cs := j.cio
	if cs == nil {
		return cache.Record{}, false
	}
	cs.mu.Lock()
	r, ok := cs.records[key]
	if ok && !r.Empty && !j.b.store.Has(r.Digest) {
		cs.pending[r.Digest] = append(cs.pending[r.Digest], r)
	}
	cs.mu.Unlock()
	if !ok || r.Empty { // Empty: see usable
		return cache.Record{}, false
	}
	if j.b.store.Has(r.Digest) {
		_ = j.b.cache.Put(r) // best effort: the next build then hits locally
	}
	return r, true
}

// fetchImported makes sure blob d is in the store, fetching it from the
// import that names it if it is not. A blob no import names is left alone
// (the caller's own open then reports it missing). Concurrent calls for
// one blob share one fetch. Once fetched, the imported records naming the
// blob are kept in the local cache.
func (j *job) fetchImported(ctx context.Context, d v1.Hash) error {
	cs, b := j.cio, j.b
	if cs == nil || b.store.Has(d) {
		return nil
	}
	cs.mu.Lock()
	src, ok := cs.digests[d]
	if !ok {
		cs.mu.Unlock()
		return nil
	}
	cs.mu.Unlock()
	_, err := cs.fetches.Do(ctx, d, func(ctx context.Context) (struct{}, error) {
		if err := src.Fetch(ctx, b.store, d); err != nil {
			return struct{}{}, err
		}
		cs.mu.Lock()
		keep := cs.pending[d]
		delete(cs.pending, d)
		cs.mu.Unlock()
		for _, r := range keep {
			if err := b.cache.Put(r); err != nil {
				return struct{}{}, err
			}
		}
		return struct{}{}, nil
	})
	return err
}

// fetchLayers makes sure every layer is in the store.
func (j *job) fetchLayers(ctx context.Context, layers []layerRef) error {
	for _, l := range layers {
		if err := j.fetchImported(ctx, l.Digest); err != nil {
			return err
		}
	}
	return nil
}

// noteCacheMount remembers a cache mount a RUN names, hit or not, so that
// --cache-to ...,cache-mounts=true exports it.
func (j *job) noteCacheMount(rm *runMount) {
	if j.cio == nil {
		return
	}
	j.cio.mu.Lock()
	if _, ok := j.cio.mountIDs[rm.cacheID]; !ok {
		j.cio.mountIDs[rm.cacheID] = rm
	}
	j.cio.mu.Unlock()
}

// restoreCacheMount fills the store's directory of a cache mount from an
// imported cache when the directory is missing or empty, before a RUN
// uses it. The cache mount directories hold the mount's exclusive lock
// meanwhile and rename the restored tree (checked against the layer's diff
// ID) into place, so no RUN ever sees a half-restored cache; a RUN that
// uses the mount meanwhile waits for the lock. It restores at most once per
// id and build.
func (j *job) restoreCacheMount(ctx context.Context, rm *runMount) error {
	cs := j.cio
	if cs == nil {
		return nil
	}
	cs.mu.Lock()
	im, ok := cs.mounts[rm.cacheID]
	done := cs.restored[rm.cacheID]
	cs.mu.Unlock()
	if !ok || done {
		return nil
	}
	restored, err := j.b.cacheMounts.Restore(ctx, rm.cacheMount(), func(dir string) error {
		if err := j.fetchImported(ctx, im.m.Digest); err != nil {
			return err
		}
		return j.extractMount(im.m, dir)
	})
	if err != nil {
		return err
	}
	// Once this returns nil the mount is settled for this build: a RUN
	// that empties it later does not get the import back. A store with
	// its own content (or a concurrent restore's) wins over the import.
	cs.mu.Lock()
	cs.restored[rm.cacheID] = true
	cs.mu.Unlock()
	if restored {
		cs.progress("restored cache mount %s from %s", rm.cacheID, im.src.Spec)
	}
	return nil
}

// extractMount applies a cache mount layer from the store into dir,
// checking it against its diff ID.
func (j *job) extractMount(m cacheio.Mount, dir string) error {
	r, err := export.OpenUncompressed(j.b.store, m.Digest)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = archive.Apply(dir, &verifyingReader{r: r, h: sha256.New(), want: m.DiffID})
	return err
}

package build

import (
	"context"
	"encoding/json"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/cache"
	"builder/build/progress"
	"builder/build/store"
)

// storeCache shows the step cache to the store's GC and check: records by
// key, with the layer each names and the step state it started from.
type storeCache struct{ c *cache.Cache }

// Walk calls fn with every record, its parent taken from its key preimage.
func (s storeCache) Walk(fn func(store.Record) error) error {
	return s.c.Walk(func(e cache.Entry) error { return fn(storeRecord(e)) })
}

// storeRecord converts a cache entry for the store.
func storeRecord(e cache.Entry) store.Record {
	r := store.Record{Key: string(e.Key), Used: e.Used, Err: e.Err}
	if e.Err != nil {
		return r
	}
	r.Empty, r.Layer, r.DiffID = e.Record.Empty, e.Record.Digest, e.Record.DiffID
	var pre cache.Preimage
	if json.Unmarshal(e.Record.Preimage, &pre) == nil {
		r.Parent = storeParent(pre.Parent)
	}
	return r
}

// storeParent converts a preimage's parent key ("scratch", "image:<config
// digest>" or another step's key) for the store; nil means unknown.
func storeParent(k string) *store.Parent {
	switch {
	case k == "scratch":
		return &store.Parent{}
	case strings.HasPrefix(k, "image:"):
		d, err := v1.NewHash(strings.TrimPrefix(k, "image:"))
		if err != nil {
			return nil
		}
		return &store.Parent{Image: d}
	}
	return &store.Parent{Key: k}
}

// Delete removes the record key.
func (s storeCache) Delete(key string) error { return s.c.Delete(cache.Key(key)) }

// DropMemos removes the preimages kept to explain misses and the
// remembered COPY source checksums.
func (s storeCache) DropMemos() error { return s.c.DropMemos() }

// CleanTemp removes every temporary record file.
func (s storeCache) CleanTemp() { s.c.CleanTemp(0) }

// autoGC runs automatic GC after a build, keeping its result, and reports
// on the build's progress what it removed. Its failure does not fail the
// build.
func (j *job) autoGC(ctx context.Context, result v1.Hash) {
	rep, err := j.b.maint.AutoGC(ctx, result)
	switch {
	case err != nil:
		j.progress.Printf("WARNING: automatic GC: %v", err)
	case rep.Records+rep.Blobs+rep.Snapshots+rep.CacheMounts > 0:
		j.progress.Printf("automatic GC: store was %s, over --gc-keep-storage %s: removed %d cache records, %d blobs, %d snapshots, %d cache mounts (%s)",
			progress.Size(rep.Total), progress.Size(rep.KeepStorage), rep.Records, rep.Blobs, rep.Snapshots, rep.CacheMounts, progress.Size(rep.Reclaimed))
	}
}

package cacheio

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/cache"
	"builder/build/registry"
	"builder/snapshot/content"
)

// Merge returns the union of ours and theirs: every record of either,
// sorted by key; where both have a key, the record created later (ours on
// a tie). Last-use times are the later of the two, and ours' records are
// used at now. Mounts are merged by id (ours win), sums by key.
func Merge(ours, theirs Config, now time.Time) Config {
	out := Config{Used: map[cache.Key]time.Time{}}
	recs := map[cache.Key]cache.Record{}
	for _, r := range theirs.Records {
		recs[r.Key] = r
	}
	for _, r := range ours.Records {
		if t, ok := recs[r.Key]; !ok || !t.Created.After(r.Created) {
			recs[r.Key] = r
		}
	}
	for _, k := range slices.Sorted(maps.Keys(recs)) {
		out.Records = append(out.Records, recs[k])
		if t, ok := theirs.Used[k]; ok {
			out.Used[k] = t
		}
	}
	for _, r := range ours.Records {
		out.Used[r.Key] = now
	}
	mounts := map[string]Mount{}
	for _, m := range theirs.Mounts {
		mounts[m.ID] = m
	}
	for _, m := range ours.Mounts {
		mounts[m.ID] = m
	}
	for _, id := range slices.Sorted(maps.Keys(mounts)) {
		out.Mounts = append(out.Mounts, mounts[id])
	}
	if len(theirs.Sums)+len(ours.Sums) > 0 {
		out.Sums = maps.Clone(theirs.Sums)
		if out.Sums == nil {
			out.Sums = map[string]string{}
		}
		maps.Copy(out.Sums, ours.Sums)
	}
	return out
}

// Bound evicts the least recently used records of c (by c.Used; records
// without a time first; then by key) until it has at most maxRecords
// records and their layers, each counted once, are at most maxSize bytes.
// A bound of 0 is no bound. Mount layers are kept and not counted.
func Bound(c Config, maxRecords int, maxSize int64) Config {
	order := slices.Clone(c.Records)
	slices.SortFunc(order, func(a, b cache.Record) int {
		return cmp.Or(c.Used[a.Key].Compare(c.Used[b.Key]), cmp.Compare(a.Key, b.Key))
	})
	uses := map[v1.Hash]int{}
	var size int64
	for _, r := range c.Records {
		if !r.Empty {
			if uses[r.Digest] == 0 {
				size += r.Size
			}
			uses[r.Digest]++
		}
	}
	evict := map[cache.Key]bool{}
	n := len(c.Records)
	for _, r := range order {
		if (maxRecords == 0 || n <= maxRecords) && (maxSize == 0 || size <= maxSize) {
			break
		}
		evict[r.Key] = true
		n--
		if !r.Empty {
			if uses[r.Digest]--; uses[r.Digest] == 0 {
				size -= r.Size
			}
		}
	}
	if len(evict) == 0 {
		return c
	}
	out := c
	out.Records = nil
	out.Used = map[cache.Key]time.Time{}
	for _, r := range c.Records {
		if !evict[r.Key] {
			out.Records = append(out.Records, r)
			if t, ok := c.Used[r.Key]; ok {
				out.Used[r.Key] = t
			}
		}
	}
	return out
}

// Merging registry exports: how many read-merge-write rounds an export
// makes at most, and the least it waits after writing before it reads the
// reference back (the wait is at least twice the round's own read-merge-
// write time, plus up to as much again at random), so that a writer that
// read the cache before this one wrote has written by then.
var (
	mergeRounds = 8
	mergeSettle = 300 * time.Millisecond
)

// exportMerged writes cfg to the registry reference spec names, merged
// with the cache already there: the blobs of cfg first (skipped where the
// repository has them), then in rounds: read the cache the reference
// holds, Merge and Bound, write the config and the manifest, wait, and
// read it back. The export is done when the reference still holds this
// build's records (or a bound evicted them); when another writer replaced
// the manifest in between, the next round merges again. A registry has no
// compare-and-swap, so this is optimistic: it needs writers to finish a
// round within the wait.
func exportMerged(ctx context.Context, spec Spec, cfg Config, s *content.Store, rc *registry.Client) (v1.Hash, error) {
	if rc == nil {
		return v1.Hash{}, errors.New("no registry client")
	}
	ref, err := rc.ParseReference(spec.Ref)
	if err != nil {
		return v1.Hash{}, err
	}
	if spec.Compression != "" {
		if cfg, err = recompress(ctx, s, cfg, spec.Compression); err != nil {
			return v1.Hash{}, err
		}
	}
	var blobs []partial.CompressedLayer
	for _, d := range cfg.descriptors() {
		if !s.Has(d.Digest) {
			return v1.Hash{}, fmt.Errorf("blob %s is not in the store", d.Digest)
		}
		blobs = append(blobs, &storeBlob{s: s, d: d})
	}
	if err := rc.WriteBlobs(ctx, ref.Context(), blobs); err != nil {
		return v1.Hash{}, err
	}
	for round := 1; round <= mergeRounds; round++ {
		start := time.Now()
		theirs, err := readCurrent(ctx, rc, ref)
		if err != nil {
			return v1.Hash{}, err
		}
		merged := Bound(Merge(cfg, theirs, time.Now().UTC()), spec.MaxRecords, spec.MaxSize)
		d, err := putCache(ctx, rc, ref, merged)
		if err != nil {
			return v1.Hash{}, err
		}
		// A writer that read before this one wrote takes about as long
		// as this round did to write: on a slow machine or registry the
		// wait grows with it.
		wait := max(mergeSettle, 2*time.Since(start))
		select {
		case <-ctx.Done():
			return v1.Hash{}, ctx.Err()
		case <-time.After(wait + rand.N(wait+1)):
		}
		now, err := readCurrent(ctx, rc, ref)
		if err != nil {
			return v1.Hash{}, err
		}
		if holds(now, merged, cfg, spec) {
			return d, nil
		}
	}
	return v1.Hash{}, fmt.Errorf("other writers replaced the cache each time; gave up after %d merges", mergeRounds)
}

// holds reports whether the cache now at the reference keeps the records
// of ours that the merged cache it wrote kept, or lacks them only because
// its bound has no room for them.
func holds(now, written, ours Config, spec Spec) bool {
	have := map[cache.Key]bool{}
	var size int64
	seen := map[v1.Hash]bool{}
	for _, r := range now.Records {
		have[r.Key] = true
		if !r.Empty && !seen[r.Digest] {
			seen[r.Digest] = true
			size += r.Size
		}
	}
	kept := map[cache.Key]bool{}
	for _, r := range written.Records {
		kept[r.Key] = true
	}
	for _, r := range ours.Records {
		if !kept[r.Key] || have[r.Key] {
			continue
		}
		full := (spec.MaxRecords > 0 && len(now.Records) >= spec.MaxRecords) ||
			(spec.MaxSize > 0 && size+r.Size > spec.MaxSize)
		if !full {
			return false
		}
	}
	return true
}

// readCurrent reads the cache config ref holds on its registry (never a
// mirror). A missing reference, or one holding something that is not a
// builder cache, counts as an empty cache: the export replaces it.
func readCurrent(ctx context.Context, rc *registry.Client, ref name.Reference) (Config, error) {
	desc, err := rc.Get(ctx, ref)
	if notFound(err) {
		return Config{}, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read the cache to merge with: %w", err)
	}
	if len(desc.Manifest) > maxConfigSize {
		return Config{}, nil
	}
	c, err := load(ctx, Spec{Type: TypeRegistry, Ref: ref.String()},
		&registrySource{rc: rc, ref: ref, raw: desc.Manifest, digest: desc.Digest})
	if errors.Is(err, ErrInvalid) || (err == nil && c.Inline) {
		return Config{}, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read the cache to merge with: %w", err)
	}
	return c.Config, nil
}

// notFound reports whether err is a registry's "no such manifest or
// repository".
func notFound(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return false
	}
	if terr.StatusCode == http.StatusNotFound {
		return true
	}
	for _, d := range terr.Errors {
		if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
			return true
		}
	}
	return false
}

// putCache writes the config blob of cfg and its manifest under ref; the
// layers it names must be in the repository.
func putCache(ctx context.Context, rc *registry.Client, ref name.Reference, cfg Config) (v1.Hash, error) {
	img, cfgRaw, err := artifact(cfg, nil)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := rc.WriteBlobs(ctx, ref.Context(), []partial.CompressedLayer{static.NewLayer(cfgRaw, types.MediaType(ConfigMediaType))}); err != nil {
		return v1.Hash{}, err
	}
	if err := rc.PutManifest(ctx, ref, img); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

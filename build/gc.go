package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"builder/build/cache"
	"builder/build/pull"
	"builder/imageref"
	"builder/internal/atomicfile"
	"builder/snapshot"
	"builder/snapshot/content"
)

// Store-wide files and directories below the root that GC manages.
const (
	gcLockFile     = "gc.lock"
	gcStateFile    = "gc.state"
	cacheMountsDir = "cachemounts"
	contextStatDir = "cache/context" // copier stat caches of build contexts
	tmpDir         = "tmp"
	maxMetaBlob    = content.MaxConfigSize // manifests, indexes and configs are read whole up to this size, the limit configs are written with
)

// The default automatic GC limit: a tenth of the store's file system, at
// most 20 GB.
const (
	defaultKeepPercent = 10
	defaultKeepCap     = 20e9
)

// lockStore takes the store lock <root>/gc.lock: shared for builds and
// checks, exclusive for garbage collection, so GC never deletes what a
// running build (in any process) is about to reference. It waits until
// the lock is free or ctx is done. The returned function releases it and
// is safe to call more than once. The lock dies with the process, so a
// killed build never blocks GC.
func (b *Builder) lockStore(ctx context.Context, exclusive bool) (func(), error) {
	unlock, _, err := b.takeStoreLock(ctx, exclusive, true)
	return unlock, err
}

// tryLockStore takes the store lock exclusively if nobody holds it, and
// returns ok=false (and a nil function) at once otherwise.
func (b *Builder) tryLockStore() (unlock func(), ok bool, err error) {
	return b.takeStoreLock(context.Background(), true, false)
}

func (b *Builder) takeStoreLock(ctx context.Context, exclusive, wait bool) (func(), bool, error) {
	f, err := os.OpenFile(filepath.Join(b.root, gcLockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("lock store: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, false, fmt.Errorf("lock store: %w", err)
		}
		if !wait && errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, false, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, false, fmt.Errorf("lock store: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	done := false
	return func() {
		if !done {
			done = true
			f.Close() // closing the only descriptor releases the flock
		}
	}, true, nil
}

// Problem is one inconsistency Check found in the store.
type Problem struct {
	Object string // what is wrong: "blob sha256:…", "cache record …", "image app:latest", "snapshot …"
	Err    error
}

func (p Problem) String() string { return p.Object + ": " + p.Err.Error() }

// Check verifies the whole store and returns what is wrong with it (none
// for a healthy store): every blob hashes to its name; every cache record
// parses and names stored blobs; every tagged image has its manifest,
// config and layers; every committed snapshot's parent exists. It holds
// the shared store lock, so it runs alongside builds but not during GC.
// It only reads. The error is for failures to run the check at all.
func (b *Builder) Check(ctx context.Context) ([]Problem, error) {
	unlock, err := b.lockStore(ctx, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var probs []Problem
	add := func(obj string, err error) { probs = append(probs, Problem{Object: obj, Err: err}) }
	buf := make([]byte, 256<<10)
	err = b.store.Walk(ctx, func(d v1.Hash, _ int64) error {
		rc, err := b.store.Open(d)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted meanwhile
			}
			add("blob "+d.String(), err)
			return nil
		}
		defer rc.Close()
		h := sha256.New()
		if _, err := io.CopyBuffer(h, content.ContextReader(ctx, rc), buf); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			add("blob "+d.String(), fmt.Errorf("read: %w", err))
			return nil
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
			add("blob "+d.String(), fmt.Errorf("content hashes to sha256:%s", got))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = b.cache.Walk(func(e cache.Entry) error {
		obj := "cache record " + string(e.Key)
		switch {
		case e.Err != nil:
			add(obj, e.Err)
		case e.Record.Empty:
		case !b.store.Has(e.Record.Digest):
			add(obj, fmt.Errorf("layer blob %s is missing", e.Record.Digest))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	entries, err := b.index.List()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b.imageBlobs(e.Digest, func(v1.Hash) {}, func(err error) { add("image "+e.Name, err) })
	}
	infos, err := b.snapshotter.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, in := range infos {
		if in.Parent != "" && !b.snapshotter.Exists(ctx, in.Parent) {
			add("snapshot "+in.Name, fmt.Errorf("parent snapshot %s is missing", in.Parent))
		}
	}
	return probs, nil
}

// imageBlobs calls mark for the manifest d and every blob it references:
// config and layers, and for an index its child manifests that are stored
// (a pull keeps one platform). Missing or unreadable required blobs are
// reported to bad.
func (b *Builder) imageBlobs(d v1.Hash, mark func(v1.Hash), bad func(error)) {
	b.markManifest(d, mark, bad, 0)
}

func (b *Builder) markManifest(d v1.Hash, mark func(v1.Hash), bad func(error), depth int) {
	raw, err := b.store.ReadBlob(d, maxMetaBlob)
	if err != nil {
		bad(fmt.Errorf("manifest: %w", err))
		return
	}
	mark(d)
	var probe struct {
		Manifests []v1.Descriptor `json:"manifests"`
		Config    *v1.Descriptor  `json:"config"`
		Layers    []v1.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		bad(fmt.Errorf("parse manifest %s: %w", d, err))
		return
	}
	if probe.Config == nil {
		if depth > 4 {
			bad(fmt.Errorf("index %s nested too deep", d))
			return
		}
		for _, m := range probe.Manifests {
			if b.store.Has(m.Digest) {
				b.markManifest(m.Digest, mark, bad, depth+1)
			}
		}
		return
	}
	for _, l := range append([]v1.Descriptor{*probe.Config}, probe.Layers...) {
		if !b.store.Has(l.Digest) {
			bad(fmt.Errorf("blob %s of manifest %s is missing", l.Digest, d))
			continue
		}
		mark(l.Digest)
	}
}

// Usage is what `builder du` shows: bytes and counts by kind.
type Usage struct {
	ImageBlobs        int64 // blobs reachable from tagged images
	CacheBlobs        int64 // blobs only cache records reach
	UnreferencedBlobs int64 // blobs nothing references (prune removes them)
	Snapshots         int64 // unpacked layer trees
	CacheMounts       int64 // RUN --mount=type=cache directories
	Images, Records   int
	Blobs, Snaps      int
	Mounts            int
}

// Total is the sum of all bytes in u.
func (u Usage) Total() int64 {
	return u.ImageBlobs + u.CacheBlobs + u.UnreferencedBlobs + u.Snapshots + u.CacheMounts
}

// DiskUsage measures the store. It takes the shared store lock and only
// reads.
func (b *Builder) DiskUsage(ctx context.Context) (Usage, error) {
	unlock, err := b.lockStore(ctx, false)
	if err != nil {
		return Usage{}, err
	}
	defer unlock()
	var u Usage
	g, err := b.scan(ctx, nil)
	if err != nil {
		return u, err
	}
	u.Images, u.Records = g.images, len(g.records)
	for d, size := range g.blobs {
		u.Blobs++
		switch {
		case g.pinned[d]:
			u.ImageBlobs += size
		case g.refs[d] > 0:
			u.CacheBlobs += size
		default:
			u.UnreferencedBlobs += size
		}
	}
	for _, in := range g.snaps {
		u.Snaps++
		u.Snapshots += dirSize(in.Dir)
	}
	for _, m := range g.mounts {
		u.Mounts++
		u.CacheMounts += m.size
	}
	return u, nil
}

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
func (b *Builder) Prune(ctx context.Context, o PruneOptions) (PruneReport, error) {
	unlock, err := b.lockStore(ctx, true)
	if err != nil {
		return PruneReport{}, err
	}
	defer unlock()
	return b.prune(ctx, o)
}

// RemoveImage untags name and then prunes what nothing references any
// more (cache records keep their layers).
func (b *Builder) RemoveImage(ctx context.Context, name string) (PruneReport, error) {
	unlock, err := b.lockStore(ctx, true)
	if err != nil {
		return PruneReport{}, err
	}
	defer unlock()
	full, err := imageref.Normalize(name)
	if err != nil {
		return PruneReport{}, err
	}
	if err := b.index.Untag(full); err != nil {
		return PruneReport{}, err
	}
	return b.prune(ctx, PruneOptions{})
}

// storeGraph is the store's reference graph, as scan finds it.
type storeGraph struct {
	blobs   map[v1.Hash]int64 // every stored blob and its size
	pinned  map[v1.Hash]bool  // reachable from tagged images
	refs    map[v1.Hash]int   // how many records name the blob
	records []cache.Entry
	images  int
	chains  map[string]bool // snapshot names tagged images need
	snaps   []snapshot.Info
	mounts  []cacheMount
}

type cacheMount struct {
	path string
	used time.Time
	size int64
}

func (b *Builder) scan(ctx context.Context, keep []v1.Hash) (*storeGraph, error) {
	g := &storeGraph{blobs: map[v1.Hash]int64{}, pinned: map[v1.Hash]bool{}, refs: map[v1.Hash]int{}, chains: map[string]bool{}}
	if err := b.store.Walk(ctx, func(d v1.Hash, size int64) error { g.blobs[d] = size; return nil }); err != nil {
		return nil, err
	}
	entries, err := b.index.List()
	if err != nil {
		return nil, err
	}
	g.images = len(entries)
	roots := append([]v1.Hash(nil), keep...)
	for _, e := range entries {
		roots = append(roots, e.Digest)
	}
	for _, root := range roots {
		var manifests []v1.Hash
		b.imageBlobs(root, func(d v1.Hash) { g.pinned[d] = true; manifests = append(manifests, d) }, func(error) {})
		for _, m := range manifests {
			if img, err := b.loadBase(m); err == nil {
				ids := make([]v1.Hash, len(img.layers))
				for i, l := range img.layers {
					ids[i] = l.DiffID
				}
				for _, c := range chainIDs(ids) {
					g.chains[c] = true
				}
			}
		}
	}
	err = b.cache.Walk(func(e cache.Entry) error {
		g.records = append(g.records, e)
		if e.Err == nil && !e.Record.Empty {
			g.refs[e.Record.Digest]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if g.snaps, err = b.snapshotter.List(ctx); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(b.root, cacheMountsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list cache mounts: %w", err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		p := filepath.Join(b.root, cacheMountsDir, e.Name())
		g.mounts = append(g.mounts, cacheMount{path: p, used: fi.ModTime(), size: dirSize(p)})
	}
	return g, nil
}

func (b *Builder) prune(ctx context.Context, o PruneOptions) (PruneReport, error) {
	g, err := b.scan(ctx, o.Keep)
	if err != nil {
		return PruneReport{}, err
	}
	return b.pruneGraph(ctx, g, o)
}

// pruneGraph is prune on the graph scan found.
func (b *Builder) pruneGraph(ctx context.Context, g *storeGraph, o PruneOptions) (PruneReport, error) {
	var rep PruneReport
	now := time.Now()
	old := func(t time.Time) bool { return o.Until > 0 && now.Sub(t) > o.Until }
	drop := map[cache.Key]bool{}
	dropRecord := func(e cache.Entry) {
		drop[e.Key] = true
		if e.Err == nil && !e.Record.Empty {
			g.refs[e.Record.Digest]--
		}
	}
	var kept []cache.Entry
	for _, e := range g.records {
		if o.All || old(e.Used) || e.Err != nil || (!e.Record.Empty && g.blobs[e.Record.Digest] == 0 && !b.store.Has(e.Record.Digest)) {
			dropRecord(e)
			continue
		}
		kept = append(kept, e)
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
			for _, name := range b.neededSnapshots(g, kept, keepRecords) {
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
		total := liveBlobs() + snapBytes(true) + mountBytes
		if total > o.KeepStorage {
			// Snapshots only records need are derived data: drop them first.
			recordSnaps = false
			total = liveBlobs() + snapBytes(false) + mountBytes
		}
		type victim struct {
			used time.Time
			rec  *cache.Entry
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
			if d := v.rec.Record.Digest; !v.rec.Record.Empty && g.refs[d] == 0 && !g.pinned[d] {
				total -= g.blobs[d]
			}
		}
		kept = kept[:0:0]
		for _, e := range g.records {
			if !drop[e.Key] {
				kept = append(kept, e)
			}
		}
	}
	// Records go first, so that no record ever names a deleted blob.
	for _, e := range g.records {
		if drop[e.Key] {
			if err := b.cache.Delete(e.Key); err != nil {
				return rep, err
			}
			rep.Records++
		}
	}
	for d, size := range g.blobs {
		if g.pinned[d] || g.refs[d] > 0 || b.young(d, o.Grace) {
			continue
		}
		if err := b.store.Delete(d); err != nil {
			return rep, err
		}
		rep.Blobs++
		rep.Reclaimed += size
	}
	n, freed, err := b.pruneSnapshots(ctx, g, b.neededSnapshots(g, kept, recordSnaps))
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
	if o.All {
		if err := os.RemoveAll(filepath.Join(b.root, contextStatDir)); err != nil {
			return rep, fmt.Errorf("remove context stat caches: %w", err)
		}
		if err := b.cache.DropMemos(); err != nil {
			return rep, err
		}
	}
	// Nothing runs under the exclusive lock: what temp files remain are a
	// killed process's.
	b.cache.CleanTemp(0)
	if ents, err := os.ReadDir(filepath.Join(b.root, contextStatDir)); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
				_ = os.Remove(filepath.Join(b.root, contextStatDir, e.Name()))
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(b.root, tmpDir)); err == nil {
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(b.root, tmpDir, e.Name()))
		}
	}
	return rep, nil
}

// neededSnapshots lists the snapshots to keep: the layer chains of tagged
// images and, if withRecords, of the kept cache records.
func (b *Builder) neededSnapshots(g *storeGraph, kept []cache.Entry, withRecords bool) []string {
	need := map[string]bool{}
	for c := range g.chains {
		need[c] = true
	}
	if withRecords {
		byKey := map[cache.Key]*cache.Entry{}
		for i := range kept {
			byKey[kept[i].Key] = &kept[i]
		}
		memo := map[cache.Key]string{}
		for _, e := range kept {
			if c, ok := b.recordChain(e.Key, byKey, memo, 0); ok && c != "" {
				need[c] = true
			}
		}
	}
	// Keep every ancestor of what is kept: an overlay layer needs them.
	parent := map[string]string{}
	for _, in := range g.snaps {
		parent[in.Name] = in.Parent
	}
	for n := range need {
		for p := parent[n]; p != "" && !need[p]; p = parent[p] {
			need[p] = true
		}
	}
	out := make([]string, 0, len(need))
	for n := range need {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// recordChain is the snapshot name (chain ID) of the filesystem a record's
// step produced, found by following preimage parents down to a base image
// or scratch; ok is false where the chain is unknown.
func (b *Builder) recordChain(k cache.Key, byKey map[cache.Key]*cache.Entry, memo map[cache.Key]string, depth int) (string, bool) {
	if c, ok := memo[k]; ok {
		return c, c != "\x00"
	}
	memo[k] = "\x00"
	if depth > 1000 {
		return "", false
	}
	var parentChain string
	switch {
	case k == "scratch":
		memo[k] = ""
		return "", true
	case strings.HasPrefix(string(k), "image:"):
		d, err := v1.NewHash(strings.TrimPrefix(string(k), "image:"))
		if err != nil {
			return "", false
		}
		raw, err := b.store.ReadBlob(d, maxMetaBlob)
		if err != nil {
			return "", false
		}
		cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
		if err != nil {
			return "", false
		}
		if ids := chainIDs(cfg.RootFS.DiffIDs); len(ids) > 0 {
			parentChain = ids[len(ids)-1]
		}
		memo[k] = parentChain
		return parentChain, true
	}
	e, ok := byKey[k]
	if !ok {
		return "", false
	}
	var pre cache.Preimage
	if err := json.Unmarshal(e.Record.Preimage, &pre); err != nil {
		return "", false
	}
	parentChain, ok = b.recordChain(cache.Key(pre.Parent), byKey, memo, depth+1)
	if !ok {
		return "", false
	}
	c := parentChain
	if !e.Record.Empty {
		c = nextChainID(parentChain, e.Record.DiffID)
	}
	memo[k] = c
	return c, true
}

// pruneSnapshots deletes every committed snapshot not in keep, children
// before parents, and returns how many it deleted and their bytes.
func (b *Builder) pruneSnapshots(ctx context.Context, g *storeGraph, keep []string) (int, int64, error) {
	keepSet := map[string]bool{}
	for _, k := range keep {
		keepSet[k] = true
	}
	parent := map[string]string{}
	for _, in := range g.snaps {
		parent[in.Name] = in.Parent
	}
	depth := func(n string) int {
		d := 0
		for p := parent[n]; p != "" && d < 10000; p = parent[p] {
			d++
		}
		return d
	}
	var del []snapshot.Info
	for _, in := range g.snaps {
		if !keepSet[in.Name] {
			del = append(del, in)
		}
	}
	sort.Slice(del, func(i, j int) bool { return depth(del[i].Name) > depth(del[j].Name) })
	var n int
	var freed int64
	for _, in := range del {
		size := dirSize(in.Dir)
		if err := b.snapshotter.Delete(ctx, in.Name); err != nil {
			if errors.Is(err, snapshot.ErrInUse) {
				continue
			}
			return n, freed, fmt.Errorf("prune snapshots: %w", err)
		}
		n++
		freed += size
	}
	return n, freed, nil
}

// dirSize is the apparent size of the files below dir, each hard-linked
// inode counted once; unreadable parts count as nothing.
func dirSize(dir string) int64 {
	var n int64
	seen := map[[2]uint64]bool{}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			id := [2]uint64{st.Dev, st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		n += st.Size
		return nil
	})
	return n
}

// DefaultKeepStorage is the automatic GC limit for a store at root when
// none is configured: a tenth of the file system root is on, at most 20 GB.
func DefaultKeepStorage(root string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return 0, &fs.PathError{Op: "statfs", Path: root, Err: err}
	}
	n := int64(st.Blocks) * int64(st.Bsize) * defaultKeepPercent / 100
	return min(n, int64(defaultKeepCap)), nil
}

// gcState is what the last automatic GC measured, kept in <root>/gc.state
// so that most builds need not measure the whole store.
type gcState struct {
	Checked time.Time `json:"checked"`
	Total   int64     `json:"total"` // bytes of blobs, snapshots and cache mounts then
	Blobs   int64     `json:"blobs"` // bytes of blobs alone then
}

// Automatic GC measures the whole store at most once per gcRecheck unless
// blob growth since the last measurement, counted gcGrowth times (for the
// snapshots unpacked from the blobs), could have crossed the limit.
const (
	gcRecheck = time.Hour
	gcGrowth  = 3
)

// autoGCGrace is how long automatic GC leaves new blobs and recently used
// cache records alone, so that a concurrent build's fresh result survives
// until that build has exported it.
const autoGCGrace = 10 * time.Minute

// young reports whether blob d was written less than grace ago.
func (b *Builder) young(d v1.Hash, grace time.Duration) bool {
	if grace <= 0 {
		return false
	}
	fi, err := os.Stat(b.store.Path(d))
	return err == nil && time.Since(fi.ModTime()) < grace
}

// AutoGCReport says what an automatic GC did.
type AutoGCReport struct {
	Ran         bool  // the store was measured
	Total       int64 // its size then
	KeepStorage int64 // the limit
	PruneReport       // what went, when the store was over the limit
}

// AutoGC applies the automatic policy (Config.GCKeepStorage) after a
// build: when the store is larger than the limit, it evicts the least
// recently used cache records, cache mounts and the snapshots and blobs
// only they need, as Prune with KeepStorage does. Tagged images and the
// manifests in keep (the build's result, which the caller may still
// export) are never touched. It does not wait: when another build or GC
// holds the store, it returns at once and a later build collects. Most
// calls only sum blob sizes (see gcRecheck); a measurement walks the
// snapshots and cache mounts. It is safe to call at any time outside a
// Build on this goroutine, and idempotent.
func (b *Builder) AutoGC(ctx context.Context, keep ...v1.Hash) (AutoGCReport, error) {
	rep := AutoGCReport{KeepStorage: b.gcKeep}
	if b.gcKeep <= 0 {
		return rep, nil
	}
	var blobs int64
	if err := b.store.Walk(ctx, func(_ v1.Hash, size int64) error { blobs += size; return nil }); err != nil {
		return rep, err
	}
	statePath := filepath.Join(b.root, gcStateFile)
	var last gcState
	if dt, err := os.ReadFile(statePath); err == nil && json.Unmarshal(dt, &last) == nil {
		age := time.Since(last.Checked)
		if age >= 0 && age < gcRecheck && last.Total+gcGrowth*max(0, blobs-last.Blobs) <= b.gcKeep {
			return rep, nil
		}
	}
	unlock, ok, err := b.tryLockStore()
	if err != nil || !ok {
		return rep, err
	}
	defer unlock()
	g, err := b.scan(ctx, keep)
	if err != nil {
		return rep, err
	}
	rep.Ran = true
	rep.Total = g.total()
	if rep.Total > b.gcKeep {
		if rep.PruneReport, err = b.pruneGraph(ctx, g, PruneOptions{KeepStorage: b.gcKeep, Keep: keep, Grace: b.gcGrace}); err != nil {
			return rep, err
		}
	}
	st := gcState{Checked: time.Now(), Total: rep.Total - rep.Reclaimed, Blobs: blobs}
	if st.Total < 0 {
		st.Total = 0
	}
	if dt, err := json.Marshal(st); err == nil {
		_ = atomicfile.WriteFile(statePath, dt, 0o600) // best effort: the next pass scans again
	}
	return rep, nil
}

// total is the size of everything the graph holds: blobs, snapshots and
// cache mounts.
func (g *storeGraph) total() int64 {
	var n int64
	for _, size := range g.blobs {
		n += size
	}
	for _, in := range g.snaps {
		n += dirSize(in.Dir)
	}
	for _, m := range g.mounts {
		n += m.size
	}
	return n
}

// autoGC runs AutoGC after a build, keeping its result, and reports on the
// build's progress what it removed. Its failure does not fail the build.
func (j *job) autoGC(ctx context.Context, result v1.Hash) {
	rep, err := j.b.AutoGC(ctx, result)
	switch {
	case err != nil:
		j.progress.Printf("WARNING: automatic GC: %v", err)
	case rep.Records+rep.Blobs+rep.Snapshots+rep.CacheMounts > 0:
		j.progress.Printf("automatic GC: store was %s, over --gc-keep-storage %s: removed %d cache records, %d blobs, %d snapshots, %d cache mounts (%s)",
			pull.HumanSize(rep.Total), pull.HumanSize(rep.KeepStorage), rep.Records, rep.Blobs, rep.Snapshots, rep.CacheMounts, pull.HumanSize(rep.Reclaimed))
	}
}

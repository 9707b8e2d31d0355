package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/export"
	"builder/snapshot"
)

// graph is the store's reference graph, as scan finds it.
type graph struct {
	blobs   map[v1.Hash]int64 // every stored blob and its size
	pinned  map[v1.Hash]bool  // reachable from tagged images
	refs    map[v1.Hash]int   // how many records name the blob
	records []Record
	images  int
	chains  map[string]bool // snapshot names tagged images need
	snaps   []snapshot.Info
	mounts  []cacheMount
}

// cacheMount is one RUN --mount=type=cache directory.
type cacheMount struct {
	path string
	used time.Time
	size int64
}

// scan reads the reference graph: every blob, what tagged images and the
// manifests in keep reach, the cache records, snapshots and cache mounts.
func (s *Store) scan(ctx context.Context, keep []v1.Hash) (*graph, error) {
	g := &graph{blobs: map[v1.Hash]int64{}, pinned: map[v1.Hash]bool{}, refs: map[v1.Hash]int{}, chains: map[string]bool{}}
	if err := s.blobs.Walk(ctx, func(d v1.Hash, size int64) error { g.blobs[d] = size; return nil }); err != nil {
		return nil, err
	}
	entries, err := s.index.List()
	if err != nil {
		return nil, err
	}
	g.images = len(entries)
	roots := append([]v1.Hash(nil), keep...)
	for _, e := range entries {
		roots = append(roots, e.Digest)
	}
	atts, err := s.index.Attestations(v1.Hash{}) // those of tagged images
	if err != nil {
		return nil, err
	}
	for _, a := range atts {
		roots = append(roots, a.Digest)
	}
	for _, root := range roots {
		s.imageBlobs(root, func(d v1.Hash) { g.pinned[d] = true }, func(m v1.Hash) {
			for _, c := range s.imageChain(m) {
				g.chains[c] = true
			}
		}, func(error) {})
	}
	err = s.cache.Walk(func(r Record) error {
		g.records = append(g.records, r)
		if r.Err == nil && !r.Empty {
			g.refs[r.Layer]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if g.snaps, err = s.snapshotter.List(ctx); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(s.root, CacheMountsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list cache mounts: %w", err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		p := filepath.Join(s.root, CacheMountsDir, e.Name())
		g.mounts = append(g.mounts, cacheMount{path: p, used: fi.ModTime(), size: dirSize(p)})
	}
	return g, nil
}

// imageChain lists the snapshot names (chain IDs) of the stored image with
// manifest m, or none when the image cannot be loaded whole.
func (s *Store) imageChain(m v1.Hash) []string {
	img, err := export.LoadImage(s.blobs, m)
	if err != nil {
		return nil
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil
	}
	return snapshot.ChainIDs(cfg.RootFS.DiffIDs)
}

// total is the size of everything the graph holds: blobs, snapshots and
// cache mounts.
func (g *graph) total() int64 {
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

// neededSnapshots lists the snapshots to keep: the layer chains of tagged
// images and, if withRecords, of the kept cache records.
func (s *Store) neededSnapshots(g *graph, kept []Record, withRecords bool) []string {
	need := map[string]bool{}
	for c := range g.chains {
		need[c] = true
	}
	if withRecords {
		byKey := map[string]*Record{}
		for i := range kept {
			byKey[kept[i].Key] = &kept[i]
		}
		memo := map[string]string{}
		for _, r := range kept {
			if c, ok := s.recordChain(r.Key, byKey, memo, 0); ok && c != "" {
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

// recordChain is the snapshot name (chain ID) of the filesystem the step of
// record key produced, found by following parents down to a base image or
// scratch; ok is false where the chain is unknown.
func (s *Store) recordChain(key string, byKey map[string]*Record, memo map[string]string, depth int) (string, bool) {
	if c, ok := memo[key]; ok {
		return c, c != "\x00"
	}
	memo[key] = "\x00"
	r, ok := byKey[key]
	if !ok || r.Parent == nil || depth > 1000 {
		return "", false
	}
	var parentChain string
	switch p := r.Parent; {
	case p.Key != "":
		if parentChain, ok = s.recordChain(p.Key, byKey, memo, depth+1); !ok {
			return "", false
		}
	case p.Image != v1.Hash{}:
		// Memoised under the digest, which no record key looks like.
		c, seen := memo[p.Image.String()]
		if !seen {
			var ok bool
			if c, ok = s.baseChain(p.Image); !ok {
				c = "\x00"
			}
			memo[p.Image.String()] = c
		}
		if c == "\x00" {
			return "", false
		}
		parentChain = c
	}
	c := parentChain
	if !r.Empty {
		c = snapshot.NextChainID(parentChain, r.DiffID)
	}
	memo[key] = c
	return c, true
}

// baseChain is the chain ID of all the layers of the base image whose
// config is the stored blob cfg; ok is false when it cannot be read.
func (s *Store) baseChain(cfg v1.Hash) (string, bool) {
	raw, err := s.blobs.ReadBlob(cfg, maxMetaBlob)
	if err != nil {
		return "", false
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return "", false
	}
	ids := snapshot.ChainIDs(cf.RootFS.DiffIDs)
	if len(ids) == 0 {
		return "", true
	}
	return ids[len(ids)-1], true
}

// pruneSnapshots deletes every committed snapshot not in keep, children
// before parents, and returns how many it deleted and their bytes.
func (s *Store) pruneSnapshots(ctx context.Context, g *graph, keep []string) (int, int64, error) {
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
		if err := s.snapshotter.Delete(ctx, in.Name); err != nil {
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

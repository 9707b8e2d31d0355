package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/store"
	"builder/export"
	"builder/snapshot"
	"builder/snapshot/content"
)

// fakeCache is an in-memory step cache that records what the store asks
// of it.
type fakeCache struct {
	records  map[string]store.Record
	memos    bool // DropMemos has not run
	cleaned  int  // CleanTemp calls
	failWalk error
}

func (c *fakeCache) Walk(fn func(store.Record) error) error {
	if c.failWalk != nil {
		return c.failWalk
	}
	keys := make([]string, 0, len(c.records))
	for k := range c.records {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(c.records[k]); err != nil {
			return err
		}
	}
	return nil
}

func (c *fakeCache) Delete(key string) error { delete(c.records, key); return nil }
func (c *fakeCache) DropMemos() error        { c.memos = false; return nil }
func (c *fakeCache) CleanTemp()              { c.cleaned++ }

// fixture is a store with real blobs, index and (naive) snapshots and a
// fake cache.
type fixture struct {
	t     testing.TB
	root  string
	blobs *content.Store
	index *export.Index
	sn    snapshot.Snapshotter
	cache *fakeCache
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	root := t.TempDir()
	blobs, err := content.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := export.OpenIndex(root)
	if err != nil {
		t.Fatal(err)
	}
	sn, _, err := snapshot.Open(filepath.Join(root, "snapshots"), snapshot.Naive)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, root: root, blobs: blobs, index: idx, sn: sn, cache: &fakeCache{records: map[string]store.Record{}, memos: true}}
}

// open makes a Store on f with the given automatic GC settings.
func (f *fixture) open(keep int64, grace time.Duration) *store.Store {
	f.t.Helper()
	s, err := store.New(store.Config{Root: f.root, Blobs: f.blobs, Index: f.index, Snapshotter: f.sn, Cache: f.cache,
		KeepStorage: keep, Grace: grace})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// blob writes dt into the content store, aged by age.
func (f *fixture) blob(dt []byte, age time.Duration) v1.Hash {
	f.t.Helper()
	d, _, err := f.blobs.WriteBlob(context.Background(), bytes.NewReader(dt), v1.Hash{})
	if err != nil {
		f.t.Fatal(err)
	}
	if age > 0 {
		old := time.Now().Add(-age)
		if err := os.Chtimes(f.blobs.Path(d), old, old); err != nil {
			f.t.Fatal(err)
		}
	}
	return d
}

// image is a stored image: manifest, config and layers.
type image struct {
	manifest, config v1.Hash
	layers, diffIDs  []v1.Hash
}

// all lists every blob of the image.
func (i image) all() []v1.Hash {
	return append([]v1.Hash{i.manifest, i.config}, i.layers...)
}

// image stores an image with one layer per content (the bytes stand in
// for a compressed layer; their sha256 for its diff ID), old enough to be
// outside any grace period, tagged as tag unless that is empty.
func (f *fixture) image(tag string, contents ...string) image {
	f.t.Helper()
	var img image
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for _, c := range contents {
		d := f.blob([]byte(c), time.Hour)
		img.layers = append(img.layers, d)
		img.diffIDs = append(img.diffIDs, v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256([]byte("diff "+c)))})
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCILayer, Digest: d, Size: int64(len(c))})
	}
	cfg, err := json.Marshal(v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: img.diffIDs}})
	if err != nil {
		f.t.Fatal(err)
	}
	img.config = f.blob(cfg, time.Hour)
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: img.config, Size: int64(len(cfg))}
	mj, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	img.manifest = f.blob(mj, time.Hour)
	if tag != "" {
		if err := f.index.Tag(tag, v1.Descriptor{Digest: img.manifest}); err != nil {
			f.t.Fatal(err)
		}
	}
	return img
}

// snapshots commits a snapshot for every prefix of diffIDs and returns
// their names.
func (f *fixture) snapshots(diffIDs []v1.Hash) []string {
	f.t.Helper()
	ctx := context.Background()
	names := snapshot.ChainIDs(diffIDs)
	parent := ""
	for i, n := range names {
		if !f.sn.Exists(ctx, n) {
			key := fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), i)
			if _, err := f.sn.Prepare(ctx, key, parent); err != nil {
				f.t.Fatal(err)
			}
			if err := f.sn.Commit(ctx, n, key); err != nil {
				f.t.Fatal(err)
			}
		}
		parent = n
	}
	return names
}

// record adds a cache record for a step on parent that produced a layer
// with content c (stored unless missing), used age ago.
func (f *fixture) record(key string, parent *store.Parent, c string, age time.Duration, missing bool) store.Record {
	f.t.Helper()
	r := store.Record{Key: key, Used: time.Now().Add(-age), Parent: parent,
		DiffID: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256([]byte("diff "+c)))}}
	if missing {
		r.Layer = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256([]byte(c)))}
	} else {
		r.Layer = f.blob([]byte(c), age)
	}
	f.cache.records[key] = r
	return r
}

// cacheMount makes a cache mount directory used age ago.
func (f *fixture) cacheMount(name string, age time.Duration) string {
	f.t.Helper()
	p := filepath.Join(f.root, store.CacheMountsDir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "data"), bytes.Repeat([]byte("x"), 4096), 0o644); err != nil {
		f.t.Fatal(err)
	}
	old := time.Now().Add(-age)
	if err := os.Chtimes(p, old, old); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// scene is a store with a tagged image and its snapshots, an untagged
// image, a cache record on the tagged image (its layer and snapshot), a
// record whose blob is gone, a damaged record, an orphan snapshot, a cache
// mount and a killed build's temp file.
type scene struct {
	kept, gone      image
	keptChain       string
	rec             store.Record
	recChain        string
	orphan          string
	mount, tempFile string
}

func (f *fixture) scene() *scene {
	f.t.Helper()
	s := &scene{kept: f.image("kept", "base layer one", "base layer two"), gone: f.image("", "untagged layer")}
	s.keptChain = f.snapshots(s.kept.diffIDs)[1]
	s.rec = f.record(strings.Repeat("a", 64), &store.Parent{Image: s.kept.config}, "step layer", 2*time.Hour, false)
	s.recChain = f.snapshots(append(append([]v1.Hash(nil), s.kept.diffIDs...), s.rec.DiffID))[2]
	f.record(strings.Repeat("b", 64), &store.Parent{Key: s.rec.Key}, "lost layer", 2*time.Hour, true)
	f.cache.records[strings.Repeat("c", 64)] = store.Record{Key: strings.Repeat("c", 64), Used: time.Now(), Err: errors.New("damaged")}
	s.orphan = f.snapshots([]v1.Hash{{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}})[0]
	s.mount = f.cacheMount("m1", time.Minute)
	s.tempFile = filepath.Join(f.root, store.TempDir, "run-123")
	if err := os.MkdirAll(filepath.Dir(s.tempFile), 0o700); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(s.tempFile, []byte("left"), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return s
}

// fixed returns o whatever the scene.
func fixed(o store.PruneOptions) func(*scene) store.PruneOptions {
	return func(*scene) store.PruneOptions { return o }
}

// TestPrune checks what each kind of collection keeps on one scene.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name  string
		opts  func(s *scene) store.PruneOptions
		check func(t *testing.T, f *fixture, s *scene, rep store.PruneReport)
	}{
		{"default keeps cache, drops the unreferenced", fixed(store.PruneOptions{}), func(t *testing.T, f *fixture, s *scene, rep store.PruneReport) {
			for _, d := range s.gone.all() {
				if f.blobs.Has(d) {
					t.Errorf("blob %s of the untagged image survived", d)
				}
			}
			if _, ok := f.cache.records[s.rec.Key]; !ok || !f.blobs.Has(s.rec.Layer) || !f.sn.Exists(ctx, s.recChain) {
				t.Error("the live record, its layer or its snapshot went")
			}
			if len(f.cache.records) != 1 || rep.Records != 2 {
				t.Errorf("records left %d, removed %d; want the lost and the damaged one removed", len(f.cache.records), rep.Records)
			}
			if f.sn.Exists(ctx, s.orphan) || rep.Snapshots != 1 {
				t.Errorf("orphan snapshot there %v, %d snapshots removed", f.sn.Exists(ctx, s.orphan), rep.Snapshots)
			}
			if !exists(s.mount) || !f.cache.memos {
				t.Error("default prune dropped a cache mount or the cache's memos")
			}
		}},
		{"all drops cache, keeps the tagged image", fixed(store.PruneOptions{All: true}), func(t *testing.T, f *fixture, s *scene, rep store.PruneReport) {
			if len(f.cache.records) != 0 || exists(s.mount) || f.cache.memos {
				t.Errorf("after --all: %d records, mount there %v, memos kept %v", len(f.cache.records), exists(s.mount), f.cache.memos)
			}
			if f.blobs.Has(s.rec.Layer) || f.sn.Exists(ctx, s.recChain) {
				t.Error("the dropped record's layer or snapshot survived")
			}
			if !f.sn.Exists(ctx, s.keptChain) {
				t.Error("the tagged image's snapshot went")
			}
		}},
		{"until drops only old cache", fixed(store.PruneOptions{Until: time.Hour}), func(t *testing.T, f *fixture, s *scene, rep store.PruneReport) {
			if _, ok := f.cache.records[s.rec.Key]; ok || !exists(s.mount) {
				t.Errorf("until 1h: the 2h old record there %v, the 1m old mount there %v", ok, exists(s.mount))
			}
		}},
		{"keep-storage evicts down to the tagged image", fixed(store.PruneOptions{KeepStorage: 1}), func(t *testing.T, f *fixture, s *scene, rep store.PruneReport) {
			if len(f.cache.records) != 0 || exists(s.mount) || f.blobs.Has(s.rec.Layer) {
				t.Errorf("keep-storage 1: %d records, mount there %v, layer there %v", len(f.cache.records), exists(s.mount), f.blobs.Has(s.rec.Layer))
			}
		}},
		{"generous keep-storage removes no cache", fixed(store.PruneOptions{KeepStorage: 1 << 40}), func(t *testing.T, f *fixture, s *scene, rep store.PruneReport) {
			if _, ok := f.cache.records[s.rec.Key]; !ok || !exists(s.mount) || !f.sn.Exists(ctx, s.recChain) {
				t.Error("keep-storage 1TiB dropped live cache")
			}
		}},
		{"keep spares an untagged image", func(s *scene) store.PruneOptions {
			return store.PruneOptions{All: true, Keep: []v1.Hash{s.gone.manifest}}
		}, func(t *testing.T, f *fixture, s *scene, rep store.PruneReport) {
			for _, d := range s.gone.all() {
				if !f.blobs.Has(d) {
					t.Errorf("blob %s of the kept untagged image went", d)
				}
			}
		}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			f := newFixture(t)
			s := f.scene()
			// A layer sidecar left without its blob: Check below names it
			// if prune keeps it.
			writeSidecar(t, f, v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("d", 64)})
			rep, err := f.open(-1, 0).Prune(ctx, c.opts(s))
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range s.kept.all() {
				if !f.blobs.Has(d) {
					t.Errorf("blob %s of the tagged image went", d)
				}
			}
			if !f.sn.Exists(ctx, s.keptChain) {
				t.Error("the tagged image's snapshot went")
			}
			if exists(s.tempFile) || f.cache.cleaned == 0 {
				t.Errorf("temporary files: %s there %v, cache cleaned %d times", s.tempFile, exists(s.tempFile), f.cache.cleaned)
			}
			c.check(t, f, s, rep)
			probs, err := f.open(-1, 0).Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range probs {
				t.Errorf("after prune: %s", p)
			}
		})
	}
}

// writeSidecar writes a layer sidecar for d (content.WriteLayer's member
// list; its content does not matter here).
func writeSidecar(t *testing.T, f *fixture, d v1.Hash) {
	t.Helper()
	p := f.blobs.SidecarPath(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRemoveImage untags an image and removes what only it used.
func TestRemoveImage(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	img := f.image("app", "app layer")
	other := f.image("other", "app layer", "other layer")
	if _, err := f.open(-1, 0).RemoveImage(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.index.Lookup("app"); err == nil {
		t.Error("the tag survived")
	}
	if f.blobs.Has(img.manifest) || f.blobs.Has(img.config) {
		t.Error("the image's manifest or config survived")
	}
	for _, d := range other.all() {
		if !f.blobs.Has(d) {
			t.Errorf("blob %s of another image went", d)
		}
	}
	if _, err := f.open(-1, 0).RemoveImage(ctx, "app"); err == nil {
		t.Error("removing a missing image succeeded")
	}
}

// TestLocks checks that collection waits for builds and automatic GC
// never does.
func TestLocks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.scene()
	before := len(f.cache.records)
	release, err := f.open(-1, 0).LockShared(ctx) // a build in another process
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	s := f.open(1, -1)
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := s.Prune(tctx, store.PruneOptions{All: true}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("prune under a build's lock: %v, want it to wait", err)
	}
	tctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := s.RemoveImage(tctx, "kept"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("rmi under a build's lock: %v, want it to wait", err)
	}
	if _, err := s.Check(ctx); err != nil {
		t.Errorf("check beside a build: %v", err)
	}
	start := time.Now()
	rep, err := s.AutoGC(ctx)
	if err != nil || rep.Ran || time.Since(start) > 5*time.Second {
		t.Errorf("AutoGC on a busy store: ran %v, err %v, took %v", rep.Ran, err, time.Since(start))
	}
	if len(f.cache.records) != before {
		t.Error("the store was collected while a build held it")
	}
	release()
	release() // safe twice
	if rep, err := s.AutoGC(ctx); err != nil || !rep.Ran || len(f.cache.records) != 0 {
		t.Errorf("AutoGC on a free store: ran %v, %d records left, err %v", rep.Ran, len(f.cache.records), err)
	}
}

// TestAutoGC checks the automatic policy: over the limit it evicts cache
// but keeps tagged images and the manifests it is told to keep, it spares
// what is younger than the grace period, under the limit it removes
// nothing and measures again only after growth, and off it does nothing.
func TestAutoGC(t *testing.T) {
	ctx := context.Background()
	t.Run("over_the_limit", func(t *testing.T) {
		f := newFixture(t)
		s := f.scene()
		rep, err := f.open(1, -1).AutoGC(ctx, s.gone.manifest)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Ran || rep.Records == 0 || len(f.cache.records) != 0 || exists(s.mount) {
			t.Errorf("report %+v, %d records left, mount there %v", rep, len(f.cache.records), exists(s.mount))
		}
		for _, d := range append(s.kept.all(), s.gone.all()...) {
			if !f.blobs.Has(d) {
				t.Errorf("blob %s of a kept image went", d)
			}
		}
	})
	t.Run("spares_the_fresh", func(t *testing.T) {
		f := newFixture(t)
		fresh := f.blob([]byte("a fresh untagged manifest"), 0)
		rec := f.record(strings.Repeat("d", 64), &store.Parent{}, "fresh layer", 0, false)
		rep, err := f.open(1, 0).AutoGC(ctx) // default grace
		if err != nil || !rep.Ran {
			t.Fatalf("ran %v, err %v", rep.Ran, err)
		}
		if !f.blobs.Has(fresh) || !f.blobs.Has(rec.Layer) || len(f.cache.records) != 1 {
			t.Error("automatic GC removed what another build has just written")
		}
		if _, err := f.open(1, 0).Prune(ctx, store.PruneOptions{KeepStorage: 1}); err != nil {
			t.Fatal(err)
		}
		if f.blobs.Has(fresh) || len(f.cache.records) != 0 {
			t.Error("prune, which has no grace period, kept fresh data")
		}
	})
	t.Run("under_the_limit", func(t *testing.T) {
		f := newFixture(t)
		s := f.scene()
		before := len(f.cache.records)
		st := f.open(1<<40, -1)
		rep, err := st.AutoGC(ctx)
		if err != nil || !rep.Ran || rep.Records+rep.Blobs+rep.Snapshots+rep.CacheMounts != 0 || rep.Total == 0 {
			t.Fatalf("first pass: %+v, err %v", rep, err)
		}
		if len(f.cache.records) != before || !f.blobs.Has(s.gone.manifest) {
			t.Error("automatic GC under the limit removed something")
		}
		if !exists(filepath.Join(f.root, store.StateFile)) {
			t.Error("no state after a measurement")
		}
		if rep, err := st.AutoGC(ctx); err != nil || rep.Ran {
			t.Errorf("second pass measured again: ran %v, err %v", rep.Ran, err)
		}
	})
	t.Run("off", func(t *testing.T) {
		f := newFixture(t)
		f.scene()
		before := len(f.cache.records)
		rep, err := f.open(-1, -1).AutoGC(ctx)
		if err != nil || rep.Ran || len(f.cache.records) != before || exists(filepath.Join(f.root, store.StateFile)) {
			t.Errorf("with GC off: ran %v, records %d → %d, err %v", rep.Ran, before, len(f.cache.records), err)
		}
	})
}

// TestCheck damages a sound store in one way each and expects Check to
// name what is wrong.
func TestCheck(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, f *fixture, s *scene) string // returns what must be named
		want   string
	}{
		{name: "clean", damage: func(*testing.T, *fixture, *scene) string { return "" }},
		{name: "corrupt blob", want: "content hashes to", damage: func(t *testing.T, f *fixture, s *scene) string {
			p := f.blobs.Path(s.kept.layers[0])
			if err := os.WriteFile(p, []byte("not what it was"), 0o644); err != nil {
				t.Fatal(err)
			}
			return s.kept.layers[0].Hex
		}},
		{name: "missing config", want: "is missing", damage: func(t *testing.T, f *fixture, s *scene) string {
			if err := f.blobs.Delete(s.kept.config); err != nil {
				t.Fatal(err)
			}
			return "image docker.io/library/kept:latest"
		}},
		{name: "record names missing blob", want: "is missing", damage: func(t *testing.T, f *fixture, s *scene) string {
			return f.record(strings.Repeat("e", 64), &store.Parent{}, "never stored", 0, true).Layer.Hex
		}},
		{name: "sidecar without blob", want: "no blob of that digest", damage: func(t *testing.T, f *fixture, s *scene) string {
			d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("c", 64)}
			writeSidecar(t, f, d)
			return "layer sidecar " + f.blobs.SidecarPath(d)
		}},
		{name: "damaged record", want: "damaged", damage: func(t *testing.T, f *fixture, s *scene) string {
			k := strings.Repeat("f", 64)
			f.cache.records[k] = store.Record{Key: k, Err: errors.New("damaged")}
			return k
		}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			f := newFixture(t)
			s := &scene{kept: f.image("kept", "one", "two")}
			f.snapshots(s.kept.diffIDs)
			subject := c.damage(t, f, s)
			probs, err := f.open(-1, 0).Check(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				for _, p := range probs {
					t.Errorf("unexpected problem: %s", p)
				}
				return
			}
			found := false
			for _, p := range probs {
				if strings.Contains(p.String(), c.want) && strings.Contains(p.String(), subject) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem naming %s with %q; got %v", subject, c.want, probs)
			}
		})
	}
	t.Run("cache_fails", func(t *testing.T) {
		f := newFixture(t)
		f.cache.failWalk = errors.New("cache unreadable")
		if _, err := f.open(-1, 0).Check(context.Background()); !errors.Is(err, f.cache.failWalk) {
			t.Errorf("check with an unreadable cache: %v", err)
		}
	})
}

// TestDiskUsage sorts the blobs of a scene by what references them.
func TestDiskUsage(t *testing.T) {
	f := newFixture(t)
	s := f.scene()
	u, err := f.open(-1, 0).DiskUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	size := func(ds ...v1.Hash) int64 {
		var n int64
		for _, d := range ds {
			sz, err := f.blobs.Size(d)
			if err != nil {
				t.Fatal(err)
			}
			n += sz
		}
		return n
	}
	want := store.Usage{ImageBlobs: size(s.kept.all()...), CacheBlobs: size(s.rec.Layer), UnreferencedBlobs: size(s.gone.all()...),
		Images: 1, Records: 3, Blobs: len(s.kept.all()) + len(s.gone.all()) + 1, Snaps: 4, Mounts: 1}
	if u.CacheMounts < 4096 {
		t.Errorf("cache mounts measured %d bytes, hold 4096", u.CacheMounts)
	}
	u.Snapshots, u.CacheMounts = 0, 0 // directory sizes depend on the file system
	if u != want {
		t.Errorf("usage\n got %+v\nwant %+v", u, want)
	}
}

// TestAutoGCWalks checks when automatic GC sums the blobs: not at all while
// no blob came or went since its last pass (a fully cached build), again
// once one did, so that a store grown past the limit is still collected,
// and always while the blob directory changed too recently for its change
// time to be trusted.
func TestAutoGCWalks(t *testing.T) {
	ctx := context.Background()
	t.Run("unchanged_then_grown", func(t *testing.T) {
		defer store.SetSettle(0)()
		f := newFixture(t)
		s := f.scene()
		probe := f.open(1<<40, -1)
		rep, err := probe.AutoGC(ctx)
		if err != nil || !rep.Ran {
			t.Fatalf("first pass: %+v, err %v", rep, err)
		}
		// A limit just above the store: room for less than a third of the
		// blob added below, counted three times for its snapshots.
		st := f.open(rep.Total+100, -1)
		walks := store.BlobWalks()
		for i := 0; i < 3; i++ {
			if rep, err := st.AutoGC(ctx); err != nil || rep.Ran {
				t.Fatalf("pass over an unchanged store: ran %v, err %v", rep.Ran, err)
			}
		}
		if n := store.BlobWalks() - walks; n != 0 {
			t.Errorf("automatic GC walked the blobs %d times over an unchanged store", n)
		}
		before := len(f.cache.records)
		big := f.blob(bytes.Repeat([]byte("x"), 4096), 0)
		rep, err = st.AutoGC(ctx)
		if err != nil || !rep.Ran {
			t.Fatalf("pass after growth past the limit: %+v, err %v", rep, err)
		}
		if store.BlobWalks() == walks {
			t.Error("automatic GC did not walk the blobs after one was added")
		}
		if f.blobs.Has(big) || len(f.cache.records) >= before || !f.blobs.Has(s.kept.manifest) {
			t.Errorf("over the limit: unreferenced blob there %v, records %d → %d, report %+v",
				f.blobs.Has(big), before, len(f.cache.records), rep)
		}
	})
	t.Run("removed_blob", func(t *testing.T) {
		defer store.SetSettle(0)()
		f := newFixture(t)
		s := f.scene()
		st := f.open(1<<40, -1)
		if _, err := st.AutoGC(ctx); err != nil {
			t.Fatal(err)
		}
		walks := store.BlobWalks()
		if err := f.blobs.Delete(s.gone.manifest); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AutoGC(ctx); err != nil {
			t.Fatal(err)
		}
		if store.BlobWalks() == walks {
			t.Error("automatic GC trusted its sum after a blob was removed")
		}
	})
	t.Run("too_recent", func(t *testing.T) {
		defer store.SetSettle(time.Hour)()
		f := newFixture(t)
		f.scene()
		st := f.open(1<<40, -1)
		if _, err := st.AutoGC(ctx); err != nil {
			t.Fatal(err)
		}
		walks := store.BlobWalks()
		if _, err := st.AutoGC(ctx); err != nil {
			t.Fatal(err)
		}
		if store.BlobWalks() == walks {
			t.Error("automatic GC kept the sum of a directory that had just changed")
		}
	})
}

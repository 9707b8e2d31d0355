package build

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"builder/build/cache"
	"builder/build/cachemount"
	"builder/build/internal/flight"
	"builder/build/pull"
	"builder/build/record"
	"builder/build/registry"
	"builder/build/store"
	"builder/export"
	"builder/snapshot"
	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Config places the store and chooses the snapshotter.
type Config struct {
	Root        string // store root
	Snapshotter string // "overlay", "naive" or "" for automatic
	// Registry is the client every registry request of a build goes
	// through: base image pulls (with mirrors, plain HTTP and TLS per
	// registry) and cache import and export. nil means a client with the
	// defaults and no configuration file.
	Registry *registry.Client
	// GCKeepStorage is the automatic GC limit: after each successful
	// build, least recently used cache is evicted until the store is at
	// most this many bytes (see store.Store.AutoGC). 0 means
	// store.DefaultKeepStorage; negative turns automatic GC off.
	GCKeepStorage int64
	// GCGrace is how long automatic GC spares blobs written and cache
	// records used recently, so that a concurrent build's fresh result
	// survives until it is exported. 0 means 10 minutes; negative, none.
	GCGrace time.Duration
	// Records bounds the build records GC keeps (see package record).
	Records record.Limits
}

// Builder builds images into one store. Several builds may run on one
// Builder, and several processes may share one store root.
type Builder struct {
	root        string
	store       *content.Store
	snapshotter snapshot.Snapshotter
	snName      string
	cache       *cache.Cache
	index       *export.Index
	registry    *registry.Client
	maint       *store.Store
	cacheMounts *cachemount.Dirs // RUN --mount=type=cache directories

	pulls flight.Group[imageKey, *baseImage] // one pull per image at a time
	steps sharedSteps                        // one run per step key at a time, across a build's platforms

	warnMu   sync.Mutex
	warnings []string // not yet shown; see TakeWarnings

	// noOnePass makes every COPY copy into a snapshot (tests compare the
	// two paths); onePassCopies counts the COPY layers written in one pass.
	noOnePass     bool
	onePassCopies atomic.Int64
}

// New opens (creating) the store at cfg.Root. The root is made mode 0700
// (its blobs and cache records can hold build-arg values); an existing
// root that other users could enter is tightened, with a warning that
// TakeWarnings, or else the next build's progress, shows once.
func New(cfg Config) (*Builder, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("open store: no root directory given")
	}
	st, err := content.Open(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	var warnings []string
	if mode, ok := st.Tightened(); ok {
		warnings = append(warnings, fmt.Sprintf("store root %s had mode %#o, open to other users; changed it to 0700", st.Root(), mode))
	}
	sn, name, err := snapshot.Open(filepath.Join(cfg.Root, "snapshots"), cfg.Snapshotter)
	if err != nil {
		return nil, fmt.Errorf("open snapshotter: %w", err)
	}
	c, err := cache.Open(filepath.Join(cfg.Root, "cache"))
	if err != nil {
		return nil, err
	}
	idx, err := export.OpenIndex(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("open image index: %w", err)
	}
	rc := cfg.Registry
	if rc == nil {
		rc = registry.New(registry.Options{})
	}
	maint, err := store.New(store.Config{Root: cfg.Root, Blobs: st, Index: idx, Snapshotter: sn, Cache: storeCache{c}, Records: cfg.Records,
		KeepStorage: cfg.GCKeepStorage, Grace: cfg.GCGrace})
	if err != nil {
		return nil, err
	}
	return &Builder{root: cfg.Root, store: st, snapshotter: sn, snName: name, cache: c, index: idx,
		maint: maint, registry: rc, cacheMounts: cachemount.New(filepath.Join(cfg.Root, store.CacheMountsDir)),
		warnings: warnings}, nil
}

// TakeWarnings returns the warnings about the store that New found (e.g.
// that it tightened the root's mode) and forgets them, so that each is
// shown once: by the caller, or else by the next build's progress.
func (b *Builder) TakeWarnings() []string {
	b.warnMu.Lock()
	defer b.warnMu.Unlock()
	w := b.warnings
	b.warnings = nil
	return w
}

// Store returns the content store.
func (b *Builder) Store() *content.Store { return b.store }

// Redact shows a value that must not be stored in the clear (a build-arg
// value) as the first hex digits of its HMAC under the store's key, as
// cache-miss explanations do: equal values read equal within one store.
func (b *Builder) Redact(v string) string { return b.cache.Redact(v) }

// Maintenance returns the store's upkeep: prune, rmi, du and check, under
// the same store lock this Builder's builds take.
func (b *Builder) Maintenance() *store.Store { return b.maint }

// Refetch pulls the image ref names again, pinned to manifest (an image
// or an index the store holds), fetching the blobs the store lacks from
// its registry: the store.Fetcher of `builder check --repair`.
func (b *Builder) Refetch(ctx context.Context, ref string, manifest v1.Hash) error {
	r, err := b.registry.ParseReference(ref)
	if err != nil {
		return err
	}
	_, err = pull.Pull(ctx, b.registry, b.store, r.Context().Digest(manifest.String()).String(), pull.Options{})
	return err
}

// Index returns the image tag index.
func (b *Builder) Index() *export.Index { return b.index }

// Registry returns the registry client the builder pulls, imports and
// exports caches with.
func (b *Builder) Registry() *registry.Client { return b.registry }

// SnapshotterName says which snapshotter the builder chose.
func (b *Builder) SnapshotterName() string { return b.snName }

// Snapshotter returns the snapshotter.
func (b *Builder) Snapshotter() snapshot.Snapshotter { return b.snapshotter }

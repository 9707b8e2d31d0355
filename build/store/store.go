// Package store maintains a builder store: the store lock that keeps
// garbage collection away from running builds, automatic GC after a build,
// prune, image removal, disk usage and the consistency check.
//
// A Store is built from the pieces build.New opens (the content store, the
// tag index, the snapshotter and the step cache). It learns which blobs and
// snapshots cache records need through the small Cache interface, so it
// does not import package build. Every operation is safe while builds run in
// this or other processes: builds hold the store lock shared (LockShared),
// Check and DiskUsage share it too, and Prune and RemoveImage take it
// exclusively; AutoGC never waits for it.
package store

import (
	"cmp"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/record"
	"builder/export"
	"builder/snapshot"
	"builder/snapshot/content"
)

// Files and directories below the store root that the store manages besides
// blobs, snapshots, the index and the cache records.
const (
	LockFile       = "gc.lock"       // the store lock (flock)
	StateFile      = "gc.state"      // what the last automatic GC measured
	CacheMountsDir = "cachemounts"   // RUN --mount=type=cache directories
	ContextStatDir = "cache/context" // the copier's stat caches of build contexts
	TempDir        = "tmp"           // scratch files of running builds
)

// maxMetaBlob is the largest manifest, index or config the store reads
// whole: the limit configs are written with.
const maxMetaBlob = content.MaxConfigSize

// Cache is the step cache as the store sees it: records that name layer
// blobs and say which snapshot their step produced.
type Cache interface {
	// Walk calls fn for every record, in no set order. Records written or
	// removed meanwhile may or may not be seen. An error from fn stops it.
	Walk(fn func(Record) error) error
	// Delete removes the record key; a missing record is not an error.
	Delete(key string) error
	// DropMemos removes what the cache keeps besides its records, such as
	// the preimages that explain misses and remembered source checksums.
	// Prune with All calls it.
	DropMemos() error
	// CleanTemp removes every temporary file a writer left. The store calls
	// it under its exclusive lock, when no writer runs, so what is left is
	// a killed process's.
	CleanTemp()
}

// Record is one cache record as Cache.Walk finds it.
type Record struct {
	Key    string
	Used   time.Time // last hit or write
	Err    error     // the record does not parse; the fields below are zero
	Empty  bool      // the step changed nothing and has no layer
	Layer  v1.Hash   // digest of the layer blob
	DiffID v1.Hash   // digest of the uncompressed layer
	Parent *Parent   // what the step started from; nil when unknown
}

// Parent is the filesystem a step started from: the result of the record
// named Key, or the base image whose config has the digest Image, or, with
// both zero, an empty tree (scratch).
type Parent struct {
	Key   string
	Image v1.Hash
}

// Config gives a Store the pieces of the store at Root.
type Config struct {
	Root        string
	Blobs       *content.Store
	Index       *export.Index
	Snapshotter snapshot.Snapshotter
	Cache       Cache
	// KeepStorage is the automatic GC limit in bytes (see AutoGC). 0 means
	// DefaultKeepStorage(Root); negative turns automatic GC off.
	KeepStorage int64
	// Grace is how long automatic GC spares blobs written and cache records
	// used recently, so that a concurrent build's fresh result survives
	// until it is exported. 0 means 10 minutes; negative, none.
	Grace time.Duration
	// Records bounds the build records (see package record) that Prune
	// and AutoGC keep; zero fields take record's defaults.
	Records record.Limits
}

// Store maintains one store. It holds no open files between calls, and
// several Stores (in one or more processes) may share a root.
type Store struct {
	root        string
	blobs       *content.Store
	index       *export.Index
	snapshotter snapshot.Snapshotter
	cache       Cache
	keep        int64 // automatic GC limit in bytes; 0 for off
	grace       time.Duration
	records     record.Limits
}

// New makes the Store for the pieces in cfg. It only fails when it cannot
// work out the default automatic GC limit.
func New(cfg Config) (*Store, error) {
	keep := cfg.KeepStorage
	if keep == 0 {
		var err error
		if keep, err = DefaultKeepStorage(cfg.Root); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	return &Store{root: cfg.Root, blobs: cfg.Blobs, index: cfg.Index, snapshotter: cfg.Snapshotter, cache: cfg.Cache,
		keep: max(keep, 0), grace: cmp.Or(cfg.Grace, autoGCGrace), records: cfg.Records}, nil
}

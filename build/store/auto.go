package store

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"builder/internal/atomicfile"
)

// The default automatic GC limit: a tenth of the store's file system, at
// most 20 GB.
const (
	defaultKeepPercent = 10
	defaultKeepCap     = 20e9
)

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
	// Sum is the byte count of the blobs at the last walk of blobs/sha256,
	// valid while that directory keeps the change time it had then.
	Sum *blobSum `json:"sum,omitempty"`
}

// blobSum is the size of all blobs while blobs/sha256 has change time
// Ctime (nanoseconds). Every blob enters and leaves that directory by a
// rename or an unlink, which sets the directory's change time, and blobs
// never change in place, so an unchanged time means unchanged bytes.
type blobSum struct {
	Ctime int64 `json:"ctime"`
	Bytes int64 `json:"bytes"`
}

// settle is how much older than the start of a walk the directory's
// change time must be for the walk's sum to be kept: a rename in the same
// clock tick as the last change (file system timestamps are coarse, and
// the clock can lag) would otherwise leave the time as it was.
var settle = time.Second

// blobWalks counts AutoGC's walks of blobs/sha256, for tests.
var blobWalks atomic.Int64

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
func (s *Store) young(d v1.Hash, grace time.Duration) bool {
	if grace <= 0 {
		return false
	}
	fi, err := os.Stat(s.blobs.Path(d))
	return err == nil && time.Since(fi.ModTime()) < grace
}

// AutoGCReport says what an automatic GC did.
type AutoGCReport struct {
	Ran         bool  // the store was measured
	Total       int64 // its size then
	KeepStorage int64 // the limit
	PruneReport       // what went, when the store was over the limit
}

// AutoGC applies the automatic policy (Config.KeepStorage) after a build:
// when the store is larger than the limit, it evicts the least recently
// used cache records, cache mounts and the snapshots and blobs only they
// need, as Prune with KeepStorage does, sparing what is younger than
// Config.Grace. Tagged images and the manifests in keep (the build's
// result, which the caller may still export) are never touched. It does
// not wait: when another build or GC holds the store, it returns at once
// and a later build collects. Most calls only sum blob sizes (see
// gcRecheck), and while no blob came or went since the last call not even
// that (see blobBytes); a measurement walks the snapshots and cache
// mounts. The caller must not hold the store lock. AutoGC is idempotent.
func (s *Store) AutoGC(ctx context.Context, keep ...v1.Hash) (AutoGCReport, error) {
	rep := AutoGCReport{KeepStorage: s.keep}
	// Build records are bounded by their own limits, whatever the cache's.
	c, err := s.collectRecords()
	if err != nil {
		return rep, err
	}
	rep.BuildRecords = c.Records
	if s.keep <= 0 {
		return rep, nil
	}
	statePath := filepath.Join(s.root, StateFile)
	var last gcState
	known := false
	if dt, err := os.ReadFile(statePath); err == nil && json.Unmarshal(dt, &last) == nil {
		known = true
	}
	blobs, sum, err := s.blobBytes(ctx, last.Sum)
	if err != nil {
		return rep, err
	}
	if known {
		age := time.Since(last.Checked)
		if age >= 0 && age < gcRecheck && last.Total+gcGrowth*max(0, blobs-last.Blobs) <= s.keep {
			if sum != nil && sum != last.Sum {
				last.Sum = sum
				writeState(statePath, last)
			}
			return rep, nil
		}
	}
	unlock, ok, err := s.tryLock()
	if err != nil || !ok {
		return rep, err
	}
	defer unlock()
	g, err := s.scan(ctx, keep)
	if err != nil {
		return rep, err
	}
	rep.Ran = true
	rep.Total = g.total()
	if rep.Total > s.keep {
		if rep.PruneReport, err = s.pruneGraph(ctx, g, PruneOptions{KeepStorage: s.keep, Keep: keep, Grace: s.grace}); err != nil {
			return rep, err
		}
		rep.BuildRecords = c.Records
	}
	st := gcState{Checked: time.Now(), Total: rep.Total - rep.Reclaimed, Blobs: blobs}
	if st.Total < 0 {
		st.Total = 0
	}
	st.Sum = sum // after a prune the directory's time no longer matches
	writeState(statePath, st)
	return rep, nil
}

// writeState replaces the state file, best effort: without it the next
// pass measures again. It is not synced: a crash that loses it only costs
// that measurement.
func writeState(path string, st gcState) {
	if dt, err := json.Marshal(st); err == nil {
		_ = atomicfile.WriteFileNoSync(path, dt, 0o600)
	}
}

// blobBytes returns the bytes of all blobs. While blobs/sha256 has the
// change time last recorded, that is last's count and nothing is read;
// otherwise it walks the blobs and returns, besides the count, the sum to
// keep for the next pass, or nil when the directory changed too recently
// for its change time to prove that nothing changed after the walk.
func (s *Store) blobBytes(ctx context.Context, last *blobSum) (int64, *blobSum, error) {
	dir := filepath.Dir(s.blobs.Path(v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}))
	ctime := func() (int64, bool) {
		var st unix.Stat_t
		if unix.Stat(dir, &st) != nil {
			return 0, false
		}
		return st.Ctim.Nano(), true
	}
	before, ok := ctime()
	if ok && last != nil && last.Ctime == before {
		return last.Bytes, last, nil
	}
	start := time.Now()
	blobWalks.Add(1)
	var n int64
	if err := s.blobs.Walk(ctx, func(_ v1.Hash, size int64) error { n += size; return nil }); err != nil {
		return 0, nil, err
	}
	after, ok2 := ctime()
	if !ok || !ok2 || after != before || time.Unix(0, before).After(start.Add(-settle)) {
		return n, nil, nil
	}
	return n, &blobSum{Ctime: before, Bytes: n}, nil
}

package build

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/cache"
	"builder/build/progress"
	"builder/export"
	"builder/snapshot"
	"builder/snapshot/content"
)

// ensureChain makes sure a committed snapshot holds the given layers and
// returns its name ("" for no layers). Missing snapshots are unpacked from
// the layer blobs in the store (a --cache-from hit's blob is fetched first),
// each checked against its diff ID.
func (j *job) ensureChain(ctx context.Context, layers []layerRef) (string, error) {
	b := j.b
	if len(layers) == 0 {
		return "", nil
	}
	ids := make([]v1.Hash, len(layers))
	for i, l := range layers {
		ids[i] = l.DiffID
	}
	chain := snapshot.ChainIDs(ids)
	first := len(chain)
	for first > 0 && !b.snapshotter.Exists(ctx, chain[first-1]) {
		first--
	}
	for i := first; i < len(chain); i++ {
		parent := ""
		if i > 0 {
			parent = chain[i-1]
		}
		if err := j.unpackLayer(ctx, layers[i], chain[i], parent); err != nil {
			return "", err
		}
	}
	return chain[len(chain)-1], nil
}

// unpackLayer unpacks layer l into a committed snapshot name on parent,
// fetching its blob first if it is a --cache-from hit's.
func (j *job) unpackLayer(ctx context.Context, l layerRef, name, parent string) error {
	b := j.b
	if err := j.fetchImported(ctx, l.Digest); err != nil { // a --cache-from hit's blob, fetched now it is needed
		return fmt.Errorf("unpack layer %s: %w", l.Digest, err)
	}
	r, err := export.OpenUncompressed(b.store, l.Digest)
	if err != nil {
		return fmt.Errorf("unpack layer %s: %w", l.Digest, err)
	}
	defer r.Close()
	vr := &verifyingReader{r: r, h: sha256.New(), want: l.DiffID}
	if err := snapshot.Unpack(ctx, b.snapshotter, name, parent, vr); err != nil {
		return fmt.Errorf("unpack layer %s: %w", l.Digest, err)
	}
	return nil
}

// verifyingReader hashes what it reads and turns EOF into an error if the
// stream does not hash to want, so a corrupt layer is never committed.
type verifyingReader struct {
	r    io.Reader
	h    hash.Hash
	want v1.Hash
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		if got := "sha256:" + hex.EncodeToString(v.h.Sum(nil)); got != v.want.String() {
			return n, fmt.Errorf("layer content hashes to %s, want diff ID %s: %w", got, v.want, content.ErrDigestMismatch)
		}
	}
	return n, err
}

// activeKey returns a fresh name for an active snapshot.
func activeKey(kind string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return kind + "-" + hex.EncodeToString(b[:])
}

// commitLayer turns the change in the active snapshot into a layer blob, a
// committed snapshot and a cache record, in that order, so that a record
// always names stored data. prev is the layer blob of the same step's last
// build, whose unchanged gzip members are reused (zero for none); how many
// were is noted on sp (if not nil).
func (j *job) commitLayer(ctx context.Context, active, parent string, key cache.Key, pre []byte, prev v1.Hash, sp *progress.Step) (cache.Record, error) {
	var epoch *int64
	if j.o.Epoch != nil {
		e := j.o.Epoch.Unix()
		epoch = &e
	}
	var stats content.LayerStats
	info, err := j.b.store.WriteLayer(ctx, func(w io.Writer) error {
		return j.b.snapshotter.Diff(ctx, w, active, snapshot.DiffOptions{Epoch: epoch})
	}, content.LayerOptions{Previous: prev, Stats: &stats})
	if err != nil {
		return cache.Record{}, fmt.Errorf("write layer: %w", err)
	}
	if stats.Reused > 0 && sp != nil {
		sp.Note(fmt.Sprintf("layer: %d of %d gzip members (%.1f MiB) reused from the last build of this step",
			stats.Reused, stats.Members, float64(stats.ReusedBytes)/(1<<20)))
	}
	// A step that changed nothing still gets its (empty) layer, as in
	// BuildKit: the history and the diff IDs line up one to one.
	rec := cache.Record{Key: key, DiffID: info.DiffID, Digest: info.Digest, Size: info.Size, MediaType: info.MediaType,
		Created: time.Now().UTC(), Preimage: json.RawMessage(pre)}
	name := snapshot.NextChainID(parent, info.DiffID)
	if err := j.b.snapshotter.Commit(ctx, name, active); err != nil {
		return cache.Record{}, fmt.Errorf("commit snapshot: %w", err)
	}
	if err := j.b.cache.Put(rec); err != nil {
		return cache.Record{}, err
	}
	return rec, nil
}

// usable reports whether a cache record's data is still in the store. An
// Empty record (no layer for a step that changed nothing, written by
// builders before every step got its layer) is not: the step runs again.
func (b *Builder) usable(r cache.Record) bool {
	return !r.Empty && b.store.Has(r.Digest)
}

// applyRecord adds a step's cached or fresh result to the stage state.
func (j *job) applyRecord(st *stageState, r cache.Record, createdBy string) {
	st.fsKey = r.Key
	if !r.Empty {
		st.layers = append(st.layers, layerRef{DiffID: r.DiffID, Digest: r.Digest, Size: r.Size, MediaType: r.MediaType})
		st.growConfig(jsonLen(r.DiffID.String()) + 1) // its rootfs.diff_ids entry
	}
	st.created = r.Created
	st.addHistory(createdBy, r.Empty, j.stepTime(r.Created))
	j.noteRecord(st, r)
}

// lookup returns a usable cache record for key unless --no-cache is set:
// the store's, else one imported with --cache-from (whose blob may not be
// fetched yet).
func (j *job) lookup(key cache.Key) (cache.Record, bool) {
	if j.o.NoCache {
		return cache.Record{}, false
	}
	r, ok, err := j.b.cache.Get(key)
	if err != nil || !ok || !j.b.usable(r) {
		return j.lookupImported(key)
	}
	return r, true
}

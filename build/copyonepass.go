package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"builder/build/cache"
	"builder/build/copier"
	"builder/build/progress"
	"builder/snapshot"
	"builder/snapshot/archive"
	"builder/snapshot/content"
)

// copyOnePass writes a COPY's layer straight from its sources, when the
// result depends on the sources alone (see copier.WriteLayer): the files
// are read once, into the tar that is hashed and compressed as it is
// written, and nothing is copied into a snapshot. The step's snapshot is
// made later from the layer blob, by ensureChain, only if a later step
// needs the files (a RUN, a COPY --from of this stage); a build that ends
// here never makes it. It reports false, having stored nothing, when the
// step needs the destination tree; the caller then copies into a snapshot
// as before. The layer is byte for byte the one that path gives.
func (j *job) copyOnePass(ctx context.Context, st *stageState, cs copySource, req copier.Request, chown string, key cache.Key, pre []byte, prev v1.Hash, sp *progress.Step) (cache.Record, bool, error) {
	if j.b.noOnePass || req.Add || req.Parents {
		return cache.Record{}, false, nil
	}
	name := strings.Trim(path.Clean("/"+req.Dest), "/")
	if name == "" || strings.Contains(name, "/") {
		return cache.Record{}, false, nil
	}
	owner, fresh, err := j.freshTopLevel(ctx, st, name, chown)
	if err != nil && ctx.Err() != nil {
		return cache.Record{}, false, err
	}
	if err != nil || !fresh {
		return cache.Record{}, false, nil // the copy into a snapshot meets (and reports) the same
	}
	req.Chown = owner
	var epoch *int64
	if j.o.Epoch != nil {
		e := j.o.Epoch.Unix()
		epoch = &e
	}
	var stats content.LayerStats
	info, err := j.b.store.WriteLayer(ctx, func(w io.Writer) error {
		aw := archive.NewWriter(w, epoch)
		err := j.withSource(ctx, cs, nil, func(src copier.Source, _ string) error {
			return copier.WriteLayer(ctx, src, req, aw)
		})
		if err != nil {
			return err
		}
		return aw.Close()
	}, content.LayerOptions{Previous: prev, Stats: &stats})
	if err != nil {
		if ctx.Err() != nil {
			return cache.Record{}, false, err
		}
		// ErrNotOnePass, or an error that the copy into a snapshot
		// reports in its own words: either way that path decides.
		return cache.Record{}, false, nil
	}
	if stats.Reused > 0 && sp != nil {
		sp.Note(fmt.Sprintf("layer: %d of %d gzip members (%.1f MiB) reused from the last build of this step",
			stats.Reused, stats.Members, float64(stats.ReusedBytes)/(1<<20)))
	}
	rec := cache.Record{Key: key, DiffID: info.DiffID, Digest: info.Digest, Size: info.Size, MediaType: info.MediaType,
		Created: time.Now().UTC(), Preimage: json.RawMessage(pre)}
	if err := j.b.cache.Put(rec); err != nil {
		return cache.Record{}, false, err
	}
	j.b.onePassCopies.Add(1)
	return rec, true, nil
}

// freshTopLevel reports whether /name is missing from the stage's tree,
// and resolves chown there as the copy into a snapshot would. A stage
// without layers is an empty tree.
func (j *job) freshTopLevel(ctx context.Context, st *stageState, name, chown string) (*copier.Owner, bool, error) {
	chain, err := j.ensureChain(ctx, st.layers)
	if err != nil {
		return nil, false, err
	}
	if chain == "" {
		dir, err := os.MkdirTemp("", "builder-empty-")
		if err != nil {
			return nil, false, err
		}
		defer os.Remove(dir)
		owner, err := copier.ResolveOwner(dir, chown)
		return owner, err == nil, nil
	}
	view, err := j.b.snapshotter.View(ctx, chain)
	if err != nil {
		return nil, false, fmt.Errorf("view snapshot: %w", err)
	}
	var owner *copier.Owner
	fresh := false
	err = j.withMounts(ctx, [][]snapshot.Mount{view}, func(roots []string) error {
		var sb unix.Stat_t
		if err := unix.Fstatat(unix.AT_FDCWD, roots[0]+"/"+name, &sb, unix.AT_SYMLINK_NOFOLLOW); !errors.Is(err, unix.ENOENT) {
			return nil
		}
		o, err := copier.ResolveOwner(roots[0], chown)
		owner, fresh = o, err == nil // an error is the copy's to report
		return nil
	})
	return owner, fresh, err
}

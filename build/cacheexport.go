package build

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"sort"

	"builder/build/cache"
	"builder/build/cacheio"
	"builder/snapshot/archive"
	"builder/snapshot/content"
)

// noteRecord remembers a record a stage applied (hit or fresh), for
// --cache-to. It does nothing when the build exports no cache.
func (j *job) noteRecord(st *stageState, r cache.Record) {
	if j.cio == nil || len(j.o.CacheTo) == 0 {
		return
	}
	j.cio.mu.Lock()
	slot := stageSlot{platform: j.label, index: st.index}
	j.cio.stages[slot] = append(j.cio.stages[slot], r)
	j.cio.mu.Unlock()
}

// stageParent returns the stage that stage i is FROM-built on, if any.
func (j *job) stageParent(i int) (int, bool) {
	s := j.g.Stages[i]
	base, err := newExpander(j.g.Escape, nil, j.meta).word(s.Base)
	if err != nil {
		return 0, false
	}
	d, ok := j.g.StageBefore(base, s.Index)
	if !ok {
		return 0, false
	}
	return d.Index, true
}

// cacheRecords lists the records an export of mode carries, each key once.
// min: the steps of the final image, that is of the target stage and the
// stages it is FROM-built on, oldest first. max: those, then every other
// stage's, by stage index. Only j's platform's records unless all, which
// takes every platform's of a multi-platform build, platform by platform.
func (j *job) cacheRecords(target int, mode string, all bool) []cache.Record {
	var chain []int
	for i, ok := target, true; ok; i, ok = j.stageParent(i) {
		chain = append([]int{i}, chain...)
	}
	if mode == cacheio.ModeMax {
		in := map[int]bool{}
		for _, i := range chain {
			in[i] = true
		}
		for i := range j.g.Stages {
			if !in[i] {
				chain = append(chain, i)
			}
		}
	}
	j.cio.mu.Lock()
	defer j.cio.mu.Unlock()
	platforms := []string{j.label}
	if all {
		platforms = j.cio.platforms
	}
	var out []cache.Record
	seen := map[cache.Key]bool{}
	for _, p := range platforms {
		for _, i := range chain {
			for _, r := range j.cio.stages[stageSlot{platform: p, index: i}] {
				if !seen[r.Key] {
					seen[r.Key] = true
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// cacheConfig is the exported form of recs, with the COPY source
// checksums the build used.
func (j *job) cacheConfig(recs []cache.Record) cacheio.Config {
	c := cacheio.Config{Records: recs}
	j.cio.mu.Lock()
	if len(j.cio.usedSums) > 0 {
		c.Sums = maps.Clone(j.cio.usedSums)
	}
	j.cio.mu.Unlock()
	return c
}

// inlineCache adds the records of the final image to its config when
// --cache-to type=inline is given; otherwise it returns cfgJSON as is.
func (j *job) inlineCache(cfgJSON []byte, target int) ([]byte, error) {
	inline := false
	for _, s := range j.o.CacheTo {
		inline = inline || s.Type == cacheio.TypeInline
	}
	if !inline || j.cio == nil {
		return cfgJSON, nil
	}
	return cacheio.AddInline(cfgJSON, j.cacheConfig(j.cacheRecords(target, cacheio.ModeMin, false)))
}

// exportCaches writes the --cache-to caches other than inline (which
// commitImage writes into the image). Blobs of imported records that were
// never needed are fetched first: an export is complete.
func (j *job) exportCaches(ctx context.Context, target int) error {
	for _, spec := range j.o.CacheTo {
		if spec.Type == cacheio.TypeInline {
			continue
		}
		sp := j.progress.Step("exporting cache to " + spec.String())
		d, err := j.exportCache(ctx, spec, target)
		if err != nil {
			sp.Error(err)
			return err
		}
		fmt.Fprintf(sp, "writing cache manifest %s\n", d)
		sp.Done()
	}
	return nil
}

func (j *job) exportCache(ctx context.Context, spec cacheio.Spec, target int) (string, error) {
	recs := j.cacheRecords(target, spec.Mode, true)
	for _, r := range recs {
		if r.Empty {
			continue
		}
		if err := j.fetchImported(ctx, r.Digest); err != nil {
			return "", fmt.Errorf("export cache to %s: %w", spec, err)
		}
	}
	cfg := j.cacheConfig(recs)
	if spec.CacheMounts {
		ms, err := j.exportMounts(ctx)
		if err != nil {
			return "", fmt.Errorf("export cache to %s: %w", spec, err)
		}
		cfg.Mounts = ms
	}
	d, err := cacheio.Export(ctx, spec, cfg, j.b.store, j.b.registry)
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// exportMounts turns the cache mounts the build's RUNs name into layers
// in the store, by id: the store's directory if it has content (read under
// a shared lock, so no RUN writes meanwhile), else the imported layer of
// that id, if any.
func (j *job) exportMounts(ctx context.Context) ([]cacheio.Mount, error) {
	j.cio.mu.Lock()
	ids := make([]string, 0, len(j.cio.mountIDs))
	for id := range j.cio.mountIDs {
		ids = append(ids, id)
	}
	j.cio.mu.Unlock()
	sort.Strings(ids)
	var out []cacheio.Mount
	for _, id := range ids {
		m, ok, err := j.exportMount(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("export cache mount %s: %w", id, err)
		}
		if ok {
			out = append(out, m)
		}
	}
	return out, nil
}

func (j *job) exportMount(ctx context.Context, id string) (cacheio.Mount, bool, error) {
	dir, _ := j.b.cacheMounts.Paths(id)
	if ents, err := os.ReadDir(dir); err != nil || len(ents) == 0 {
		j.cio.mu.Lock()
		im, ok := j.cio.mounts[id]
		j.cio.mu.Unlock()
		if !ok {
			return cacheio.Mount{}, false, nil
		}
		if err := j.fetchImported(ctx, im.m.Digest); err != nil {
			return cacheio.Mount{}, false, err
		}
		return im.m, true, nil
	}
	release, err := j.b.cacheMounts.ReadLock(ctx, id)
	if err != nil {
		return cacheio.Mount{}, false, err
	}
	defer release()
	info, err := j.b.store.WriteLayer(ctx, func(w io.Writer) error { return archive.WriteTree(ctx, w, dir) }, content.LayerOptions{})
	if err != nil {
		return cacheio.Mount{}, false, err
	}
	return cacheio.Mount{ID: id, DiffID: info.DiffID, Digest: info.Digest, Size: info.Size, MediaType: info.MediaType}, true, nil
}

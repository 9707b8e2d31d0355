package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/snapshot/content"
)

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
func (s *Store) Check(ctx context.Context) ([]Problem, error) {
	unlock, err := s.lock(ctx, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.check(ctx)
}

// check is Check under a lock the caller holds.
func (s *Store) check(ctx context.Context) ([]Problem, error) {
	var probs []Problem
	add := func(obj string, err error) { probs = append(probs, Problem{Object: obj, Err: err}) }
	if err := s.checkBlobs(ctx, add); err != nil {
		return nil, err
	}
	err := s.cache.Walk(func(r Record) error {
		obj := "cache record " + r.Key
		switch {
		case r.Err != nil:
			add(obj, r.Err)
		case r.Empty:
		case !s.blobs.Has(r.Layer):
			add(obj, fmt.Errorf("layer blob %s is missing", r.Layer))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	entries, err := s.index.List()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		s.imageBlobs(e.Digest, func(v1.Hash) {}, nil, func(err error) { add("image "+e.Name, err) })
	}
	bad, err := s.blobs.BadSidecars()
	if err != nil {
		return nil, err
	}
	for _, p := range slices.Sorted(maps.Keys(bad)) {
		add("layer sidecar "+p, fmt.Errorf("%w (harmless: members are compressed afresh; repair removes it)", bad[p]))
	}
	infos, err := s.snapshotter.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, in := range infos {
		if in.Parent != "" && !s.snapshotter.Exists(ctx, in.Parent) {
			add("snapshot "+in.Name, fmt.Errorf("parent snapshot %s is missing", in.Parent))
		}
	}
	return probs, nil
}

// checkBlobs hashes every stored blob and reports to add those whose
// content does not match their name.
func (s *Store) checkBlobs(ctx context.Context, add func(string, error)) error {
	buf := make([]byte, 256<<10)
	return s.blobs.Walk(ctx, func(d v1.Hash, _ int64) error {
		rc, err := s.blobs.Open(d)
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
}

// imageBlobs calls mark for the manifest d and every blob it references:
// config and layers, and for an index its child manifests that are stored
// (a pull keeps one platform). It calls image, unless nil, for every image
// manifest (one with a config) among them. Missing or unreadable required
// blobs are reported to bad.
func (s *Store) imageBlobs(d v1.Hash, mark, image func(v1.Hash), bad func(error)) {
	s.markManifest(d, mark, image, bad, 0)
}

// markManifest is imageBlobs for a manifest or index depth levels down.
func (s *Store) markManifest(d v1.Hash, mark, image func(v1.Hash), bad func(error), depth int) {
	raw, err := s.blobs.ReadBlob(d, maxMetaBlob)
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
			if s.blobs.Has(m.Digest) {
				s.markManifest(m.Digest, mark, image, bad, depth+1)
			}
		}
		return
	}
	if image != nil {
		image(d)
	}
	for _, l := range append([]v1.Descriptor{*probe.Config}, probe.Layers...) {
		if !s.blobs.Has(l.Digest) {
			bad(&missingError{Blob: l.Digest, Manifest: d})
			continue
		}
		mark(l.Digest)
	}
}

// missingError is a blob an image manifest names that is not stored.
type missingError struct{ Blob, Manifest v1.Hash }

func (e *missingError) Error() string {
	return fmt.Sprintf("blob %s of manifest %s is missing", e.Blob, e.Manifest)
}

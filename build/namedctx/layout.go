package namedctx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxMetaSize bounds index.json, indexes and manifests read whole.
const maxMetaSize = 8 << 20

// RefNameAnnotation names an image in an OCI layout's index.json.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// BlobWriter is the content store an OCI layout is imported into.
type BlobWriter interface {
	// WriteBlob stores r, checking it against expected.
	WriteBlob(ctx context.Context, r io.Reader, expected v1.Hash) (v1.Hash, int64, error)
	Has(d v1.Hash) bool
}

// ImportLayout copies the image an OCILayout context names into s and
// returns its manifest digest: the manifest c.Digest names, or else the
// one index.json tags c.Tag (or its only manifest), for platform when it
// is an index. Every file is opened inside the layout directory (a
// symlink cannot lead out of it), must be a regular file, and every blob
// is checked against its digest and size before it is stored; the
// manifest is stored last, so a failed import leaves no image.
func ImportLayout(ctx context.Context, s BlobWriter, c Context, platform v1.Platform) (v1.Hash, error) {
	l := layout{dir: c.Path}
	d, err := l.find(c)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("oci-layout %s: %w", c.Path, err)
	}
	dgst, err := l.importImage(ctx, s, d, platform)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("oci-layout %s: %w", c.Path, err)
	}
	return dgst, nil
}

type layout struct{ dir string }

// open opens the layout file rel, resolved inside the layout, as a
// regular file.
func (l layout) open(rel string) (*os.File, int64, error) {
	f, err := pathrs.OpenInRoot(l.dir, rel)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	rf, err := pathrs.Reopen(f, os.O_RDONLY)
	if err != nil {
		return nil, 0, err
	}
	fi, err := rf.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", rel)
	}
	if err != nil {
		rf.Close()
		return nil, 0, err
	}
	return rf, fi.Size(), nil
}

// readSmall reads the layout file rel whole, up to maxMetaSize bytes.
func (l layout) readSmall(rel string) ([]byte, error) {
	f, size, err := l.open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > maxMetaSize {
		return nil, fmt.Errorf("%s: %d bytes is too large", rel, size)
	}
	return io.ReadAll(io.LimitReader(f, maxMetaSize))
}

func blobPath(d v1.Hash) string { return "blobs/" + d.Algorithm + "/" + d.Hex }

// readBlob reads the metadata blob d whole and checks its digest.
func (l layout) readBlob(d v1.Hash) ([]byte, error) {
	if d.Algorithm != "sha256" {
		return nil, fmt.Errorf("blob %s: unsupported digest algorithm", d)
	}
	dt, err := l.readSmall(blobPath(d))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if got, _, _ := v1.SHA256(bytes.NewReader(dt)); got != d {
		return nil, fmt.Errorf("blob %s: content has digest %s", d, got)
	}
	return dt, nil
}

// find returns the descriptor c names: by digest, by tag, or the only one.
func (l layout) find(c Context) (v1.Descriptor, error) {
	dt, err := l.readSmall("index.json")
	if err != nil {
		return v1.Descriptor{}, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(dt))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("index.json: %w", err)
	}
	if c.Digest != "" {
		h, err := v1.NewHash(c.Digest)
		if err != nil {
			return v1.Descriptor{}, err
		}
		for _, m := range idx.Manifests {
			if m.Digest == h {
				return m, nil
			}
		}
		// Not listed: a manifest inside one of the listed indexes; its
		// media type comes from the blob itself.
		return v1.Descriptor{Digest: h}, nil
	}
	var tagged []v1.Descriptor
	for _, m := range idx.Manifests {
		if m.Annotations[RefNameAnnotation] == c.Tag {
			tagged = append(tagged, m)
		}
	}
	switch {
	case len(tagged) == 1:
		return tagged[0], nil
	case len(tagged) > 1:
		return v1.Descriptor{}, fmt.Errorf("tag %q names %d manifests in index.json", c.Tag, len(tagged))
	case len(idx.Manifests) == 1:
		return idx.Manifests[0], nil
	}
	return v1.Descriptor{}, fmt.Errorf("tag %q not found in index.json (%d manifests)", c.Tag, len(idx.Manifests))
}

// importImage resolves d down to one image manifest for platform and
// stores its config, layers and manifest.
func (l layout) importImage(ctx context.Context, s BlobWriter, d v1.Descriptor, platform v1.Platform) (v1.Hash, error) {
	for depth := 0; ; depth++ {
		if depth == 4 {
			return v1.Hash{}, errors.New("indexes nested too deep")
		}
		raw, err := l.readBlob(d.Digest)
		if err != nil {
			return v1.Hash{}, err
		}
		var probe struct {
			MediaType types.MediaType `json:"mediaType"`
			Manifests json.RawMessage `json:"manifests"`
		}
		if err := json.Unmarshal(raw, &probe); err != nil {
			return v1.Hash{}, fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		if probe.MediaType.IsIndex() || (probe.MediaType == "" && probe.Manifests != nil) {
			idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
			if err != nil {
				return v1.Hash{}, fmt.Errorf("index %s: %w", d.Digest, err)
			}
			child, err := pick(idx, platform)
			if err != nil {
				return v1.Hash{}, fmt.Errorf("index %s: %w", d.Digest, err)
			}
			d = child
			continue
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return v1.Hash{}, fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if err := l.copyBlob(ctx, s, b); err != nil {
				return v1.Hash{}, err
			}
		}
		if _, _, err := s.WriteBlob(ctx, bytes.NewReader(raw), d.Digest); err != nil {
			return v1.Hash{}, fmt.Errorf("store manifest %s: %w", d.Digest, err)
		}
		return d.Digest, nil
	}
}

// copyBlob stores the blob b of the layout, checked against its digest
// and size.
func (l layout) copyBlob(ctx context.Context, s BlobWriter, b v1.Descriptor) error {
	if s.Has(b.Digest) {
		return nil
	}
	if b.Digest.Algorithm != "sha256" {
		return fmt.Errorf("blob %s: unsupported digest algorithm", b.Digest)
	}
	f, size, err := l.open(blobPath(b.Digest))
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	defer f.Close()
	if size != b.Size {
		return fmt.Errorf("blob %s: %d bytes, the manifest says %d", b.Digest, size, b.Size)
	}
	if _, _, err := s.WriteBlob(ctx, io.LimitReader(f, size), b.Digest); err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	return nil
}

// pick chooses the manifest of an index for platform (OS and
// architecture, and the variant when one is asked for).
func pick(idx *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	for _, m := range idx.Manifests {
		p := m.Platform
		if p != nil && p.OS == want.OS && p.Architecture == want.Architecture && (want.Variant == "" || want.Variant == p.Variant) {
			return m, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("no image for platform %s/%s", want.OS, want.Architecture)
}

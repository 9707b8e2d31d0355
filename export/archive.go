package export

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/imageref"
	"builder/snapshot/content"
)

// archiveTime is the mtime of every entry of an OCI archive, so the archive
// depends on the image only.
var archiveTime = time.Unix(0, 0)

// WriteOCIArchive writes img to w as a tar of an OCI image layout:
// oci-layout, index.json and blobs/sha256/<hex> for the config, each layer
// and the manifest. Layers are streamed from img, never held in memory.
// index.json has one descriptor, annotated from refName as refAnnotations
// says: "docker.io/library/app:1" gives ref.name "1" and
// io.containerd.image.name "docker.io/library/app:1"; "latest" gives
// ref.name "latest". An empty refName adds no annotations. The same image
// and refName always give the same bytes.
func WriteOCIArchive(ctx context.Context, w io.Writer, img v1.Image, refName string) error {
	return WriteOCIArchiveImages(ctx, w, []NamedImage{{Image: img, RefName: refName}})
}

// NamedImage is one index.json entry of an OCI archive: an image and the
// name its annotations carry (see WriteOCIArchive), and more annotations
// for its entry (--annotation manifest-descriptor:; the name's win).
type NamedImage struct {
	Image       v1.Image
	RefName     string
	Annotations map[string]string
}

// WriteOCIArchiveImages writes several images into one OCI archive, as
// WriteOCIArchive writes one: index.json has an entry per NamedImage, in
// order (an image named twice has two entries), and each blob is written
// once. The same images and names always give the same bytes.
func WriteOCIArchiveImages(ctx context.Context, w io.Writer, images []NamedImage) error {
	if err := writeOCIArchive(ctx, w, images); err != nil {
		return fmt.Errorf("write oci archive: %w", err)
	}
	return nil
}

func writeOCIArchive(ctx context.Context, w io.Writer, images []NamedImage) error {
	var descs []v1.Descriptor
	for _, ni := range images {
		desc, err := imageDescriptor(ni.Image, ni.RefName, ni.Annotations)
		if err != nil {
			return err
		}
		descs = append(descs, desc)
	}
	index, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     descs,
	})
	if err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	tw, err := startOCIArchive(ctx, w)
	if err != nil {
		return err
	}
	seen := map[v1.Hash]bool{}
	for i, ni := range images {
		if err := writeImageBlobs(ctx, tw, ni.Image, descs[i].Digest, seen); err != nil {
			return err
		}
	}
	if err := writeEntry(tw, "index.json", bytes.NewReader(index), int64(len(index))); err != nil {
		return err
	}
	return tw.Close()
}

// startOCIArchive starts the tar of an OCI layout: the blob directories
// and oci-layout.
func startOCIArchive(ctx context.Context, w io.Writer) (*tar.Writer, error) {
	tw := tar.NewWriter(content.ContextWriter(ctx, w))
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: archiveTime}); err != nil {
			return nil, err
		}
	}
	if err := writeEntry(tw, "oci-layout", bytes.NewReader([]byte(`{"imageLayoutVersion":"1.0.0"}`)), 30); err != nil {
		return nil, err
	}
	return tw, nil
}

// writeImageBlobs writes the config, layers and manifest of img (manifest
// digest d) that seen does not hold yet, and adds them to seen.
func writeImageBlobs(ctx context.Context, tw *tar.Writer, img v1.Image, d v1.Hash, seen map[v1.Hash]bool) error {
	if seen[d] {
		return nil
	}
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("layers: %w", err)
	}
	if len(layers) != len(m.Layers) {
		return fmt.Errorf("%d layers but %d in the manifest", len(layers), len(m.Layers))
	}
	if !seen[m.Config.Digest] {
		seen[m.Config.Digest] = true
		if err := writeEntry(tw, blobName(m.Config.Digest), bytes.NewReader(rawConfig), int64(len(rawConfig))); err != nil {
			return err
		}
	}
	for i, l := range layers {
		ld := m.Layers[i]
		if seen[ld.Digest] {
			continue
		}
		seen[ld.Digest] = true
		if err := ctx.Err(); err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		err = writeEntry(tw, blobName(ld.Digest), rc, ld.Size)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
	}
	seen[d] = true
	return writeEntry(tw, blobName(d), bytes.NewReader(rawManifest), int64(len(rawManifest)))
}

// writeIndexBlobs writes the blobs of every image idx lists and, with
// nested set, of the indexes it lists (one level more: with flatten, the
// first entry may be a multi-platform index, its referrers beside it),
// with their manifests.
func writeIndexBlobs(ctx context.Context, tw *tar.Writer, idx v1.ImageIndex, im *v1.IndexManifest, nested bool, seen map[v1.Hash]bool) error {
	for _, d := range im.Manifests {
		if nested && d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return fmt.Errorf("index entry %s: %w", d.Digest, err)
			}
			cim, err := child.IndexManifest()
			if err != nil {
				return fmt.Errorf("index entry %s: %w", d.Digest, err)
			}
			raw, err := child.RawManifest()
			if err != nil {
				return fmt.Errorf("index entry %s: %w", d.Digest, err)
			}
			if err := writeIndexBlobs(ctx, tw, child, cim, false, seen); err != nil {
				return err
			}
			if !seen[d.Digest] {
				seen[d.Digest] = true
				if err := writeEntry(tw, blobName(d.Digest), bytes.NewReader(raw), int64(len(raw))); err != nil {
					return err
				}
			}
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("index entry %s: %w", d.Digest, err)
		}
		if err := writeImageBlobs(ctx, tw, img, d.Digest, seen); err != nil {
			return err
		}
	}
	return nil
}

// WriteOCIIndexArchive writes idx, an index of images (one level), to w
// as a tar of an OCI image layout. index.json names idx itself once per
// name of refNames (once unnamed without), annotated from the name as in
// WriteOCIArchive and with annotations (the name's win), as BuildKit lists
// an image once per name; with flatten it lists idx's manifests instead,
// the first once per name annotated so, for indexes whose entries are an
// image and its OCI 1.1 referrers.
func WriteOCIIndexArchive(ctx context.Context, w io.Writer, idx v1.ImageIndex, refNames []string, flatten bool, annotations map[string]string) error {
	if err := writeOCIIndexArchive(ctx, w, idx, refNames, flatten, annotations); err != nil {
		return fmt.Errorf("write oci archive: %w", err)
	}
	return nil
}

func writeOCIIndexArchive(ctx context.Context, w io.Writer, idx v1.ImageIndex, refNames []string, flatten bool, annotations map[string]string) error {
	if len(refNames) == 0 {
		refNames = []string{""}
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	tw, err := startOCIArchive(ctx, w)
	if err != nil {
		return err
	}
	seen := map[v1.Hash]bool{}
	if err := writeIndexBlobs(ctx, tw, idx, im, flatten, seen); err != nil {
		return err
	}
	var top []v1.Descriptor
	if flatten {
		if len(im.Manifests) > 0 {
			for _, n := range refNames {
				d := im.Manifests[0]
				d.Annotations = topAnnotations(n, im.Manifests[0].Annotations, annotations)
				top = append(top, d)
			}
			top = append(top, im.Manifests[1:]...)
		}
	} else {
		d, size, err := v1.SHA256(bytes.NewReader(raw))
		if err != nil {
			return err
		}
		if err := writeEntry(tw, blobName(d), bytes.NewReader(raw), size); err != nil {
			return err
		}
		for _, n := range refNames {
			top = append(top, v1.Descriptor{MediaType: im.MediaType, Digest: d, Size: size, Annotations: topAnnotations(n, annotations)})
		}
	}
	index, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: top})
	if err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	if err := writeEntry(tw, "index.json", bytes.NewReader(index), int64(len(index))); err != nil {
		return err
	}
	return tw.Close()
}

// imageDescriptor describes img for an index, with annotations and the ref
// name annotations.
func imageDescriptor(img v1.Image, refName string, annotations map[string]string) (v1.Descriptor, error) {
	digest, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("digest: %w", err)
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("manifest size: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("media type: %w", err)
	}
	desc := v1.Descriptor{MediaType: mt, Digest: digest, Size: size}
	desc.Annotations = topAnnotations(refName, annotations)
	if cfg, err := img.ConfigFile(); err == nil && cfg.OS != "" {
		desc.Platform = &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant, OSVersion: cfg.OSVersion}
	}
	return desc, nil
}

// topAnnotations merges the annotations of an index.json entry: those of
// each map in order, then refName's (which name the entry and so win);
// nil when there are none.
func topAnnotations(refName string, maps ...map[string]string) map[string]string {
	var out map[string]string
	for _, m := range append(maps, refAnnotations(refName)) {
		for k, v := range m {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// refAnnotations names an image in an archive's index.json the way BuildKit
// and docker save do: a full reference ("app:1", "ghcr.io/o/app"; anything
// with '/' or ':') gives org.opencontainers.image.ref.name = its tag and
// io.containerd.image.name = its normalized name; anything else ("latest")
// is taken as the tag alone.
func refAnnotations(refName string) map[string]string {
	if refName == "" {
		return nil
	}
	if !strings.ContainsAny(refName, "/:") {
		return map[string]string{AnnotationRefName: refName}
	}
	r, err := name.ParseReference(refName)
	if err != nil {
		return map[string]string{AnnotationRefName: refName}
	}
	ann := map[string]string{AnnotationContainerdName: imageref.Spell(r)}
	if t, ok := r.(name.Tag); ok {
		ann[AnnotationRefName] = t.TagStr()
	}
	return ann
}

func blobName(d v1.Hash) string { return "blobs/" + d.Algorithm + "/" + d.Hex }

// writeEntry writes one regular file of exactly size bytes from r.
func writeEntry(tw *tar.Writer, path string, r io.Reader, size int64) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path, Size: size, Mode: 0o644, ModTime: archiveTime}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	n, err := io.Copy(tw, io.LimitReader(r, size))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if n != size {
		return fmt.Errorf("write %s: %d bytes, want %d", path, n, size)
	}
	return nil
}

// WriteDockerArchive writes img to w in the format `docker load` reads
// (manifest.json, config and layer blobs), tagged with tags in the order
// given, which are normalized with imageref.Normalize and must be tags. With no
// tags the image is loaded untagged. Layers are streamed from img. The same
// image and tags always give the same bytes.
func WriteDockerArchive(ctx context.Context, w io.Writer, img v1.Image, tags []string) error {
	return WriteDockerArchiveImages(ctx, w, []DockerImage{{Image: img, Tags: tags}})
}

// WriteOCIDir adds img to the OCI image layout at dir, creating the layout
// if needed. With a refName the image is annotated as in WriteOCIArchive
// and replaces any image of the layout with the same name annotations;
// without, it is appended. Its entry also gets annotations (the name's
// win). Blobs the layout already has are not rewritten.
func WriteOCIDir(ctx context.Context, dir string, img v1.Image, refName string, annotations map[string]string) error {
	// go-containerregistry writes a blob straight under its final name, so
	// a corrupt one must be caught before it starts.
	if err := VerifyLayers(ctx, img); err != nil {
		return fmt.Errorf("write oci dir: %w", err)
	}
	return addToOCIDir(ctx, dir, refName, annotations,
		func(p layout.Path, m match.Matcher, opts ...layout.Option) error {
			return p.ReplaceImage(img, m, opts...)
		},
		func(p layout.Path, opts ...layout.Option) error { return p.AppendImage(img, opts...) })
}

// addToOCIDir opens the OCI image layout at dir, creating it if needed,
// and adds an image or an index to it: with refName's annotations through
// replace (which drops what had the same names), without through add;
// annotations go on its entry either way.
func addToOCIDir(ctx context.Context, dir, refName string, annotations map[string]string, replace func(layout.Path, match.Matcher, ...layout.Option) error, add func(layout.Path, ...layout.Option) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write oci dir: %w", err)
	}
	p, err := layout.FromPath(dir)
	if errors.Is(err, fs.ErrNotExist) {
		p, err = layout.Write(dir, empty.Index)
	}
	if err != nil {
		return fmt.Errorf("write oci dir: %w", err)
	}
	if ann := refAnnotations(refName); ann != nil {
		err = replace(p, func(d v1.Descriptor) bool {
			return d.Annotations[AnnotationRefName] == ann[AnnotationRefName] &&
				d.Annotations[AnnotationContainerdName] == ann[AnnotationContainerdName]
		}, layout.WithAnnotations(topAnnotations(refName, annotations)))
	} else if len(annotations) > 0 {
		err = add(p, layout.WithAnnotations(annotations))
	} else {
		err = add(p)
	}
	if err != nil {
		return fmt.Errorf("write oci dir: %w", err)
	}
	return nil
}

// DockerImage is one image of a docker archive and the tags it is loaded
// under, in order.
type DockerImage struct {
	Image v1.Image
	Tags  []string
}

// WriteDockerArchiveRefs writes several images to w in the format `docker
// load` reads, each under its tags (normalized with imageref.Normalize; they
// must be tags). Tags naming the same image are grouped into one entry;
// entries and tags are written in the sorted order of the tags, so the
// bytes do not depend on map order.
func WriteDockerArchiveRefs(ctx context.Context, w io.Writer, images map[string]v1.Image) error {
	tags := make([]string, 0, len(images))
	for t := range images {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	var list []DockerImage
	at := map[v1.Image]int{}
	for _, t := range tags {
		img := images[t]
		i, ok := at[img]
		if !ok {
			i = len(list)
			at[img] = i
			list = append(list, DockerImage{Image: img})
		}
		list[i].Tags = append(list[i].Tags, t)
	}
	return WriteDockerArchiveImages(ctx, w, list)
}

// WriteDockerArchiveImages writes images to w in the format `docker load`
// reads: for each image in order its config ("sha256:<hex>") and its layer
// blobs ("<hex>.tar.gz", ".tar.zst" or ".tar" by media type; a blob shared
// with an earlier image is written once), then manifest.json with one entry
// per image, RepoTags in the order given (normalized; they must be tags).
// Layers are streamed. The same input always gives the same bytes.
func WriteDockerArchiveImages(ctx context.Context, w io.Writer, images []DockerImage) error {
	if err := writeDockerArchive(ctx, w, images); err != nil {
		return fmt.Errorf("write docker archive: %w", err)
	}
	return nil
}

// dockerManifestEntry is one entry of a docker archive's manifest.json.
type dockerManifestEntry struct {
	Config       string
	RepoTags     []string
	Layers       []string
	LayerSources map[v1.Hash]v1.Descriptor `json:",omitempty"`
}

func writeDockerArchive(ctx context.Context, w io.Writer, images []DockerImage) error {
	if len(images) == 0 {
		return errors.New("no image to write")
	}
	manifest := make([]dockerManifestEntry, 0, len(images))
	for _, di := range images {
		e := dockerManifestEntry{RepoTags: []string{}}
		for _, t := range di.Tags {
			full, err := parseTag(t)
			if err != nil {
				return err
			}
			e.RepoTags = append(e.RepoTags, full)
		}
		m, err := di.Image.Manifest()
		if err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
		cfg, err := di.Image.ConfigFile()
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
			return fmt.Errorf("%d diff IDs for %d layers", len(cfg.RootFS.DiffIDs), len(m.Layers))
		}
		e.Config = m.Config.Digest.String()
		for i, l := range m.Layers {
			e.Layers = append(e.Layers, l.Digest.Hex+dockerLayerExtension(l.MediaType))
			if !l.MediaType.IsDistributable() {
				if e.LayerSources == nil {
					e.LayerSources = map[v1.Hash]v1.Descriptor{}
				}
				e.LayerSources[cfg.RootFS.DiffIDs[i]] = l
			}
		}
		if len(di.Tags) == 0 {
			e.RepoTags = nil
		}
		manifest = append(manifest, e)
	}
	rawManifest, err := json.Marshal(manifest)
	if err != nil {
		return fmt.Errorf("encode manifest.json: %w", err)
	}

	tw := tar.NewWriter(content.ContextWriter(ctx, w))
	seen := map[string]bool{}
	for i, di := range images {
		e := manifest[i]
		if !seen[e.Config] {
			seen[e.Config] = true
			raw, err := di.Image.RawConfigFile()
			if err != nil {
				return fmt.Errorf("config: %w", err)
			}
			if err := writeEntry(tw, e.Config, bytes.NewReader(raw), int64(len(raw))); err != nil {
				return err
			}
		}
		m, _ := di.Image.Manifest()
		for j, desc := range m.Layers {
			file := e.Layers[j]
			if seen[file] {
				continue
			}
			seen[file] = true
			if err := ctx.Err(); err != nil {
				return err
			}
			l, err := di.Image.LayerByDigest(desc.Digest)
			if err != nil {
				return fmt.Errorf("layer %s: %w", desc.Digest, err)
			}
			rc, err := l.Compressed()
			if err != nil {
				return fmt.Errorf("layer %s: %w", desc.Digest, err)
			}
			err = writeEntry(tw, file, rc, desc.Size)
			rc.Close()
			if err != nil {
				return fmt.Errorf("layer %s: %w", desc.Digest, err)
			}
		}
	}
	if err := writeEntry(tw, "manifest.json", bytes.NewReader(rawManifest), int64(len(rawManifest))); err != nil {
		return err
	}
	return tw.Close()
}

// dockerLayerExtension names a layer file of a docker archive the way
// docker and go-containerregistry do, by its compression.
func dockerLayerExtension(mt types.MediaType) string {
	switch mt {
	case types.OCILayerZStd:
		return ".tar.zst"
	case types.OCIUncompressedLayer, types.OCIUncompressedRestrictedLayer, types.DockerUncompressedLayer:
		return ".tar"
	}
	return ".tar.gz"
}

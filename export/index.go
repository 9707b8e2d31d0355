package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"builder/imageref"
	"builder/internal/atomicfile"
	"builder/snapshot/content"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// Annotations that name a tagged image in index.json.
const (
	AnnotationRefName        = "org.opencontainers.image.ref.name"
	AnnotationContainerdName = "io.containerd.image.name"
)

// ErrNotFound is returned for a name that is not tagged in the index.
var ErrNotFound = errors.New("image not found")

const (
	indexFile     = "index.json"
	indexLockFile = "index.json.lock"
)

// Index is the tag list of a store: <root>/index.json, an OCI image index
// with one descriptor per tag, named by the full normalized reference in
// both the org.opencontainers.image.ref.name and io.containerd.image.name
// annotations. With the store's blobs/ and oci-layout files this makes the
// root an OCI image layout. Changes are made under an flock on
// index.json.lock and land atomically (temp file + rename), so concurrent
// processes may tag at once; readers never lock. An Index holds no open
// files and needs no closing.
type Index struct {
	s *content.Store
}

// Entry is one tag of the index.
type Entry struct {
	Name      string            // full normalized name, e.g. docker.io/library/app:latest
	Digest    v1.Hash           // manifest digest
	MediaType types.MediaType   // manifest media type
	ID        v1.Hash           // the image ID: config digest (see ImageID); an index's digest
	Size      int64             // manifest + config + layer blob bytes
	Created   time.Time         // the image config's created time; zero if unknown
	Labels    map[string]string // the image config's labels
	// Platforms are the image's platform, or an index's platforms in
	// order ("linux/amd64"); empty if unknown.
	Platforms []string
}

// OpenIndex returns the index of the store at root (opening the store with
// content.Open, which creates it if needed), creating an empty index.json
// if there is none. It is idempotent.
func OpenIndex(root string) (*Index, error) {
	s, err := content.Open(root)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	x := &Index{s: s}
	if _, err := os.Stat(x.path()); err == nil {
		return x, nil
	}
	if err := x.update(func(*v1.IndexManifest) error { return nil }); err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	return x, nil
}

func (x *Index) path() string { return filepath.Join(x.s.Root(), indexFile) }

// read parses index.json; a missing file is an empty index.
func (x *Index) read() (*v1.IndexManifest, error) {
	b, err := os.ReadFile(x.path())
	if errors.Is(err, fs.ErrNotExist) {
		return &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", x.path(), err)
	}
	return im, nil
}

// update runs change on the index under the lock and writes the result.
func (x *Index) update(change func(*v1.IndexManifest) error) error {
	root := x.s.Root()
	lock, err := os.OpenFile(filepath.Join(root, indexLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock index: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock index: %w", err)
	}
	// Under the lock, a leftover temp file is from a writer that died.
	if stale, _ := filepath.Glob(atomicfile.TempPattern(x.path())); len(stale) > 0 {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	im, err := x.read()
	if err != nil {
		return err
	}
	if err := change(im); err != nil {
		return err
	}
	im.SchemaVersion = 2
	im.MediaType = types.OCIImageIndex
	if im.Manifests == nil {
		im.Manifests = []v1.Descriptor{}
	}
	b, err := json.Marshal(im)
	if err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	if err := atomicfile.WriteFile(x.path(), b, 0o600); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	return nil
}

// refName returns the name annotation of an index entry, or "".
func refName(d v1.Descriptor) string {
	if n := d.Annotations[AnnotationRefName]; n != "" {
		return n
	}
	return d.Annotations[AnnotationContainerdName]
}

// parseTag normalizes a name that must be a tag, not a digest.
func parseTag(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parse image name %q: %w", ref, err)
	}
	if _, ok := r.(name.Tag); !ok {
		return "", fmt.Errorf("image name %q: a tag is needed, not a digest", ref)
	}
	return imageref.Spell(r), nil
}

// Tag points name (normalized with imageref.Normalize; it must be a tag) at
// desc, replacing what name pointed at before. desc.Digest must be a
// manifest blob in the store; a zero desc.Size or empty desc.MediaType is
// filled in from it. Other annotations of desc are kept. Tagging the same
// name with the same descriptor again changes nothing.
func (x *Index) Tag(ref string, desc v1.Descriptor) error {
	full, err := parseTag(ref)
	if err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	size, err := x.s.Size(desc.Digest)
	if err != nil {
		return fmt.Errorf("tag %s: %w", full, err)
	}
	if desc.Size == 0 {
		desc.Size = size
	}
	if desc.MediaType == "" {
		raw, err := x.s.ReadBlob(desc.Digest, maxManifestSize)
		if err != nil {
			return fmt.Errorf("tag %s: %w", full, err)
		}
		if desc.MediaType, err = manifestMediaType(raw); err != nil {
			return fmt.Errorf("tag %s: %w", full, err)
		}
	}
	ann := map[string]string{}
	for k, v := range desc.Annotations {
		ann[k] = v
	}
	ann[AnnotationRefName] = full
	ann[AnnotationContainerdName] = full
	desc.Annotations = ann
	err = x.update(func(im *v1.IndexManifest) error {
		for i, d := range im.Manifests {
			if refName(d) == full {
				im.Manifests[i] = desc
				return nil
			}
		}
		im.Manifests = append(im.Manifests, desc)
		return nil
	})
	if err != nil {
		return fmt.Errorf("tag %s: %w", full, err)
	}
	return nil
}

// Lookup returns the descriptor that name points at. A digest reference
// ("app@sha256:…") finds any tag of that repository with that digest. An
// unknown name gives an error wrapping ErrNotFound.
func (x *Index) Lookup(ref string) (v1.Descriptor, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("lookup: parse image name %q: %w", ref, err)
	}
	full := imageref.Spell(r)
	im, err := x.read()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("lookup %s: %w", full, err)
	}
	for _, d := range im.Manifests {
		n := refName(d)
		if dig, ok := r.(name.Digest); ok {
			repo, _, _ := strings.Cut(full, "@")
			if d.Digest.String() == dig.DigestStr() && strings.HasPrefix(n, repo+":") {
				return d, nil
			}
			continue
		}
		if n == full {
			return d, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("lookup %s: %w", full, ErrNotFound)
}

// Untag removes name from the index; an unknown name gives an error
// wrapping ErrNotFound. The image's blobs stay in the store.
func (x *Index) Untag(ref string) error {
	full, err := parseTag(ref)
	if err != nil {
		return fmt.Errorf("untag: %w", err)
	}
	err = x.update(func(im *v1.IndexManifest) error {
		n := len(im.Manifests)
		im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool { return refName(d) == full })
		if len(im.Manifests) == n {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("untag %s: %w", full, err)
	}
	return nil
}

// List returns every tagged image sorted by name. Size and Created come
// from the manifest and config in the store; for an image whose blobs are
// missing, Size is the manifest's alone and Created is zero.
func (x *Index) List() ([]Entry, error) {
	im, err := x.read()
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []Entry
	for _, d := range im.Manifests {
		n := refName(d)
		if n == "" {
			continue
		}
		e := Entry{Name: n, Digest: d.Digest, MediaType: d.MediaType, Size: d.Size}
		x.describe(&e)
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// describe adds the config and layer sizes, the platforms and the
// created time of an image manifest or index in the store to e; for an
// index, each blob of its images counts once.
func (x *Index) describe(e *Entry) {
	e.ID = e.Digest
	raw, err := x.s.ReadBlob(e.Digest, maxManifestSize)
	if err != nil {
		return
	}
	if mt, err := manifestMediaType(raw); err == nil && mt.IsIndex() {
		x.describeIndex(e, raw)
		return
	}
	if m, err := v1.ParseManifest(bytes.NewReader(raw)); err == nil && m.Config.Digest != (v1.Hash{}) {
		e.ID = m.Config.Digest
	}
	size, cfg := x.manifestSize(raw, map[v1.Hash]bool{})
	e.Size += size
	if cfg != nil {
		e.Created = cfg.Created.Time
		e.Labels = cfg.Config.Labels
		if cfg.OS != "" {
			e.Platforms = []string{PlatformString(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})}
		}
	}
}

// describeIndex is describe for an index: its manifests' sizes and
// platforms, and the newest created time.
func (x *Index) describeIndex(e *Entry, raw []byte) {
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return
	}
	seen := map[v1.Hash]bool{}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.OS != "unknown" {
			e.Platforms = append(e.Platforms, PlatformString(*d.Platform))
		}
		child, err := x.s.ReadBlob(d.Digest, maxManifestSize)
		if err != nil || seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		size, cfg := x.manifestSize(child, seen)
		e.Size += int64(len(child)) + size
		if cfg != nil && cfg.Created.After(e.Created) {
			e.Created = cfg.Created.Time
		}
	}
}

// manifestSize returns the bytes of the config and layers of an image
// manifest not in seen (adding them), and its config if readable.
func (x *Index) manifestSize(raw []byte, seen map[v1.Hash]bool) (int64, *v1.ConfigFile) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil || m.Config.Digest == (v1.Hash{}) {
		return 0, nil
	}
	var size int64
	for _, l := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if !seen[l.Digest] {
			seen[l.Digest] = true
			size += l.Size
		}
	}
	rawConfig, err := x.s.ReadBlob(m.Config.Digest, maxConfigSize)
	if err != nil {
		return size, nil
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return size, nil
	}
	return size, cfg
}

// Annotations of an attestation manifest entry (as BuildKit's attestation
// storage writes them in an image index).
const (
	AnnotationReferenceType   = "vnd.docker.reference.type"
	AnnotationReferenceDigest = "vnd.docker.reference.digest"
	referenceTypeAttestation  = "attestation-manifest"
	// AnnotationAttestIndex, on the local entry of an attestation manifest
	// about one platform's image of a multi-platform index, is that
	// index's digest: the entry lives while a tag names the index (the
	// image itself is not tagged).
	AnnotationAttestIndex = "builder.attest-index"
)

// attestationLive reports whether the attestation entry d is about an
// image that tagged names, or one of a tagged index.
func attestationLive(d v1.Descriptor, tagged map[string]bool) bool {
	return tagged[d.Annotations[AnnotationReferenceDigest]] || tagged[d.Annotations[AnnotationAttestIndex]]
}

// isAttestation reports whether an index entry is an attestation manifest.
func isAttestation(d v1.Descriptor) bool {
	return d.Annotations[AnnotationReferenceType] == referenceTypeAttestation
}

// Attach records desc, an attestation manifest in the store annotated with
// AnnotationReferenceType and AnnotationReferenceDigest, as an untagged
// entry of the index, so that GC keeps it while a tag names the image it
// is about. It replaces the entry of an earlier attestation manifest for
// the same image and drops those of images no tag names any more. Attach
// is idempotent.
func (x *Index) Attach(desc v1.Descriptor) error {
	if !isAttestation(desc) || desc.Annotations[AnnotationReferenceDigest] == "" {
		return fmt.Errorf("attach %s: not an attestation manifest descriptor", desc.Digest)
	}
	err := x.update(func(im *v1.IndexManifest) error {
		tagged := map[string]bool{}
		for _, d := range im.Manifests {
			if refName(d) != "" {
				tagged[d.Digest.String()] = true
			}
		}
		im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool {
			if !isAttestation(d) || refName(d) != "" {
				return false
			}
			ref := d.Annotations[AnnotationReferenceDigest]
			return ref == desc.Annotations[AnnotationReferenceDigest] || !attestationLive(d, tagged)
		})
		im.Manifests = append(im.Manifests, desc)
		return nil
	})
	if err != nil {
		return fmt.Errorf("attach %s: %w", desc.Digest, err)
	}
	return nil
}

// Attestations returns the attestation manifest entries of the index
// that are about the manifest d, or about any tagged image (or image of a
// tagged index) when d is zero.
func (x *Index) Attestations(d v1.Hash) ([]v1.Descriptor, error) {
	im, err := x.read()
	if err != nil {
		return nil, err
	}
	tagged := map[string]bool{}
	for _, m := range im.Manifests {
		if refName(m) != "" {
			tagged[m.Digest.String()] = true
		}
	}
	var out []v1.Descriptor
	for _, m := range im.Manifests {
		ref := m.Annotations[AnnotationReferenceDigest]
		if !isAttestation(m) || refName(m) != "" || !attestationLive(m, tagged) {
			continue
		}
		if d == (v1.Hash{}) || ref == d.String() {
			out = append(out, m)
		}
	}
	return out, nil
}

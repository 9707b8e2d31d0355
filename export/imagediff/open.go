package imagediff

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/attest"
	"builder/export"
	"builder/snapshot/content"
)

// Size limits for the JSON documents read whole into memory.
const (
	maxManifestSize = 8 << 20
	maxConfigSize   = content.MaxConfigSize // the limit the builder writes with
)

// ErrNotLocal is a plain name that the local store does not hold: Open
// never falls back to a registry for one (docker://REF reaches it).
var ErrNotLocal = errors.New("not in the local store")

// OpenOptions say where Open looks for an image.
type OpenOptions struct {
	// Store and Index are the local store; names found in Index are read
	// from Store. Both nil means no local store.
	Store *content.Store
	Index *export.Index
	// Remote opens registry references (the CLI passes its
	// *registry.Client, with credentials, plain HTTP and TLS settings;
	// mirrors do not apply: a diff reads the registry named). nil means
	// registry references cannot be opened.
	Remote Remote
	// Platform picks the image of a multi-platform index; default
	// linux/GOARCH.
	Platform *v1.Platform
}

// Remote opens images in registries.
type Remote interface {
	// ParseReference parses a reference with Docker's defaults.
	ParseReference(ref string) (name.Reference, error)
	// Image returns the image ref names, platform picked out of an index;
	// layers are read only when opened.
	Image(ctx context.Context, ref name.Reference, platform v1.Platform) (v1.Image, error)
}

// Source is an opened image and the name it was opened by. Close releases
// the file an archive image reads from; it is safe to call more than once.
type Source struct {
	Name   string
	Image  v1.Image
	close  func() error
	attest func(context.Context) ([]*attest.Statement, error) // nil: none can be attached
}

// Close releases what the image reads from.
func (s *Source) Close() error {
	if s.close == nil {
		return nil
	}
	c := s.close
	s.close = nil
	return c()
}

// Open resolves ref to an image. Accepted forms:
//
//	oci-archive:FILE     an OCI image layout in a tar file
//	docker-archive:FILE  a `docker save` tar file
//	oci:DIR              an OCI image layout directory
//	docker://REF         a registry reference
//	FILE.tar             an archive file (OCI layout or docker save), never a name
//	NAME or ID           a local store name or image ID, never a registry
//
// Nothing is read beyond manifests and configs until layers are opened.
func Open(ctx context.Context, ref string, o OpenOptions) (*Source, error) {
	switch {
	case strings.HasPrefix(ref, "oci-archive:"), strings.HasPrefix(ref, "docker-archive:"):
		_, file, _ := strings.Cut(ref, ":")
		return openArchive(ref, file, o)
	case strings.HasPrefix(ref, "oci:"):
		dir := strings.TrimPrefix(ref, "oci:")
		img, at, err := openLayout(dirFS(dir), o)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", ref, err)
		}
		return &Source{Name: ref, Image: img, attest: at}, nil
	case strings.HasPrefix(ref, "docker://"):
		return openRemote(ctx, ref, strings.TrimPrefix(ref, "docker://"), o)
	}
	if strings.HasSuffix(ref, ".tar") {
		return openArchive(ref, ref, o)
	}
	if o.Index == nil || o.Store == nil {
		return nil, fmt.Errorf("open %s: %w (there is no local store; write docker://%s for a registry)", ref, ErrNotLocal, ref)
	}
	r, err := o.Index.Resolve(ref)
	if errors.Is(err, export.ErrNotFound) {
		return nil, fmt.Errorf("open %s: %w (write docker://%s for a registry)", ref, ErrNotLocal, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ref, err)
	}
	img, err := storeImage(o.Store, r.Desc, platform(o))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ref, err)
	}
	var top v1.Hash
	if r.Desc.MediaType.IsIndex() {
		top = r.Desc.Digest
	}
	return &Source{Name: ref, Image: img, attest: storeAttestations(o, top, d)}, nil
}

// storeImage loads the stored image desc names; for a multi-platform
// image, the one for want.
func storeImage(s *content.Store, desc v1.Descriptor, want v1.Platform) (v1.Image, error) {
	if !desc.MediaType.IsIndex() {
		return export.LoadImage(s, desc.Digest)
	}
	idx, err := export.LoadIndex(s, desc.Digest)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	d, err := pick(im.Manifests, want)
	if err != nil {
		return nil, err
	}
	return idx.Image(d.Digest)
}

func openRemote(ctx context.Context, display, ref string, o OpenOptions) (*Source, error) {
	if o.Remote == nil {
		return nil, fmt.Errorf("open %s: not a local name or an archive, and registries are not reachable here", display)
	}
	r, err := o.Remote.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("open %s: not a local name, an archive or a registry reference: %w", display, err)
	}
	img, err := o.Remote.Image(ctx, r, platform(o))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", display, err)
	}
	src := &Source{Name: display, Image: img}
	if rm, ok := o.Remote.(AttestationRemote); ok {
		src.attest = remoteAttestations(rm, r, img)
	}
	return src, nil
}

func platform(o OpenOptions) v1.Platform {
	if o.Platform != nil {
		return *o.Platform
	}
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// openArchive opens a tar file holding an OCI layout (index.json) or a
// docker save archive (manifest.json). Blobs are read in place, as sections
// of the file, never extracted or loaded whole.
func openArchive(display, file string, o OpenOptions) (*Source, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	tf, err := indexTar(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", display, err)
	}
	var img v1.Image
	var at func(context.Context) ([]*attest.Statement, error)
	switch {
	case tf.has("index.json"):
		img, at, err = openLayout(tf, o)
	case tf.has("manifest.json"):
		img, err = tarball.Image(func() (io.ReadCloser, error) { return os.Open(file) }, nil)
	default:
		err = errors.New("neither index.json (OCI layout) nor manifest.json (docker save) in the archive")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", display, err)
	}
	return &Source{Name: display, Image: img, close: f.Close, attest: at}, nil
}

// layoutFS opens the files of an OCI image layout by slash path.
type layoutFS interface {
	open(p string) (io.ReadCloser, int64, error)
}

type dirFS string

func (d dirFS) open(p string) (io.ReadCloser, int64, error) {
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(p)))
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// tarFS is a tar file's regular files, as sections of the file.
type tarFS struct {
	f     *os.File
	files map[string][2]int64 // offset, size
}

// indexTar records where each regular file's data lies in the tar f. The
// tar reader reads headers in whole blocks without reading ahead, so the
// file position after Next is the start of the entry's data.
func indexTar(f *os.File) (*tarFS, error) {
	t := &tarFS{f: f, files: map[string][2]int64{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return t, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		t.files[path.Clean(strings.TrimPrefix(h.Name, "./"))] = [2]int64{off, h.Size}
	}
}

func (t *tarFS) has(p string) bool { _, ok := t.files[p]; return ok }

func (t *tarFS) open(p string) (io.ReadCloser, int64, error) {
	e, ok := t.files[p]
	if !ok {
		return nil, 0, fmt.Errorf("%s: %w", p, os.ErrNotExist)
	}
	return io.NopCloser(io.NewSectionReader(t.f, e[0], e[1])), e[1], nil
}

func readAll(fs layoutFS, p string, limit int64) ([]byte, error) {
	rc, size, err := fs.open(p)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > limit {
		return nil, fmt.Errorf("%s: %d bytes is too large", p, size)
	}
	return io.ReadAll(io.LimitReader(rc, limit))
}

func blobPath(d v1.Hash) string { return "blobs/" + d.Algorithm + "/" + d.Hex }

// openLayout reads index.json of an OCI layout and descends to one image
// manifest: the only one, else the one for the platform. It also returns
// how to read the attestations of that image.
func openLayout(fs layoutFS, o OpenOptions) (v1.Image, func(context.Context) ([]*attest.Statement, error), error) {
	raw, err := readAll(fs, "index.json", maxManifestSize)
	if err != nil {
		return nil, nil, err
	}
	want := platform(o)
	var seen []*v1.IndexManifest
	for depth := 0; depth < 4; depth++ {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, nil, fmt.Errorf("parse index: %w", err)
		}
		seen = append(seen, idx)
		desc, err := pick(idx.Manifests, want)
		if err != nil {
			return nil, nil, err
		}
		body, err := readAll(fs, blobPath(desc.Digest), maxManifestSize)
		if err != nil {
			return nil, nil, err
		}
		if desc.MediaType.IsIndex() {
			raw = body
			continue
		}
		img, err := layoutImage(fs, body)
		if err != nil {
			return nil, nil, err
		}
		return img, layoutAttestations(fs, seen, desc.Digest), nil
	}
	return nil, nil, errors.New("indexes nested too deep")
}

// pick chooses the image descriptor of an index; attestation manifests
// (in the index, or listed beside the image as referrers) are never it.
func pick(all []v1.Descriptor, want v1.Platform) (v1.Descriptor, error) {
	var ds []v1.Descriptor
	for _, d := range all {
		if !attest.IsAttestation(d) && d.ArtifactType != attest.ArtifactType {
			ds = append(ds, d)
		}
	}
	if len(ds) == 1 {
		return ds[0], nil
	}
	for _, d := range ds {
		if d.Platform != nil && d.Platform.Satisfies(want) {
			return d, nil
		}
	}
	if len(ds) == 0 {
		return v1.Descriptor{}, errors.New("the index lists no images")
	}
	return v1.Descriptor{}, fmt.Errorf("the index lists %d images and none for %s", len(ds), want.String())
}

// layoutImage is an image whose blobs lie in a layout.
type layoutImageCore struct {
	fs          layoutFS
	rawManifest []byte
	manifest    *v1.Manifest
	rawConfig   []byte
}

func layoutImage(fs layoutFS, rawManifest []byte) (v1.Image, error) {
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	cfg, err := readAll(fs, blobPath(m.Config.Digest), maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return partial.CompressedToImage(&layoutImageCore{fs: fs, rawManifest: rawManifest, manifest: m, rawConfig: cfg})
}

func (l *layoutImageCore) RawConfigFile() ([]byte, error) { return l.rawConfig, nil }
func (l *layoutImageCore) RawManifest() ([]byte, error)   { return l.rawManifest, nil }
func (l *layoutImageCore) MediaType() (types.MediaType, error) {
	if l.manifest.MediaType != "" {
		return l.manifest.MediaType, nil
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	_ = json.Unmarshal(l.rawManifest, &probe)
	if probe.MediaType == "" {
		return types.OCIManifestSchema1, nil
	}
	return probe.MediaType, nil
}

func (l *layoutImageCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, d := range l.manifest.Layers {
		if d.Digest == h {
			return &layoutLayer{fs: l.fs, desc: d}, nil
		}
	}
	return nil, fmt.Errorf("blob %s is not a layer of the image", h)
}

type layoutLayer struct {
	fs   layoutFS
	desc v1.Descriptor
}

func (l *layoutLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *layoutLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *layoutLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *layoutLayer) Compressed() (io.ReadCloser, error) {
	rc, _, err := l.fs.open(blobPath(l.desc.Digest))
	return rc, err
}

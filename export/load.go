package export

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"

	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ErrUnknownArchive is returned by LoadArchive for a tar that is neither an
// OCI image layout nor a docker-save archive.
var ErrUnknownArchive = errors.New("not an OCI or docker image archive")

// Loaded is one image LoadArchive stored.
type Loaded struct {
	Digest v1.Hash  // manifest digest in the store
	Names  []string // names the archive gives the image, normalized; may be empty
}

// LoadArchive stores the images of the tar file at path, which is either an
// OCI image layout (index.json, as WriteOCIArchive, docker save since 25 and
// skopeo write it) or a docker-save archive (manifest.json, as
// WriteDockerArchive and older docker save write it), and returns them in
// archive order. The caller tags the names in its index.
//
// Every blob is checked: OCI blobs against their digest; docker archive
// configs against their file name when it is a digest, and layers against
// the config's diff IDs. Uncompressed docker layers are stored gzip
// compressed (content.Store.WriteLayer); compressed ones are kept as they
// are. Docker archive images get Docker media types (OCI ones if a layer is
// zstd). Of an OCI index entry that is itself an index, the linux image of
// this machine's architecture is loaded. The file is read several times
// (headers are skipped by seeking), never held in memory; a manifest is
// stored only after all its blobs. Loading an archive again is idempotent.
func LoadArchive(ctx context.Context, s *content.Store, path string) ([]Loaded, error) {
	l, err := loadArchive(ctx, s, path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return l, nil
}

// archiveEntry is the name of a regular file in the archive, cleaned.
func archiveEntry(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// eachFile calls fn for every regular file of the tar at p. fn may leave
// the reader unread.
func eachFile(ctx context.Context, p string, fn func(name string, size int64, r io.Reader) error) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(archiveEntry(h.Name), h.Size, content.ContextReader(ctx, tr)); err != nil {
			return err
		}
	}
}

// readFiles reads the named small files of the archive whole.
func readFiles(ctx context.Context, p string, want func(string) bool, limit int64) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := eachFile(ctx, p, func(name string, size int64, r io.Reader) error {
		if !want(name) {
			return nil
		}
		if size > limit {
			return fmt.Errorf("%s: %d bytes is too large", name, size)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		files[name] = b
		return nil
	})
	return files, err
}

func loadArchive(ctx context.Context, s *content.Store, p string) ([]Loaded, error) {
	top, err := readFiles(ctx, p, func(n string) bool {
		return n == "index.json" || n == "manifest.json" || n == "oci-layout"
	}, maxManifestSize)
	if err != nil {
		return nil, err
	}
	if idx, ok := top["index.json"]; ok {
		if _, ok := top["oci-layout"]; ok {
			return loadOCI(ctx, s, p, idx)
		}
	}
	if m, ok := top["manifest.json"]; ok {
		return loadDocker(ctx, s, p, m)
	}
	return nil, ErrUnknownArchive
}

// loadOCI stores every blob of an OCI layout archive, then resolves its
// index.json.
func loadOCI(ctx context.Context, s *content.Store, p string, rawIndex []byte) ([]Loaded, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(rawIndex))
	if err != nil {
		return nil, fmt.Errorf("parse index.json: %w", err)
	}
	err = eachFile(ctx, p, func(n string, size int64, r io.Reader) error {
		alg, hexd, ok := strings.Cut(strings.TrimPrefix(n, "blobs/"), "/")
		if !strings.HasPrefix(n, "blobs/") || !ok {
			return nil
		}
		d, err := v1.NewHash(alg + ":" + hexd)
		if err != nil {
			return fmt.Errorf("blob %s: %w", n, err)
		}
		if have, err := s.Size(d); err == nil && have == size {
			return nil
		}
		if _, _, err := s.WriteBlob(ctx, r, d); err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Loaded
	for _, desc := range idx.Manifests {
		d, err := resolveImageDesc(s, desc, 0)
		if err != nil {
			return nil, err
		}
		if _, err := LoadImage(s, d); err != nil {
			return nil, err
		}
		out = append(out, Loaded{Digest: d, Names: ociNames(desc)})
	}
	return out, nil
}

// resolveImageDesc follows indexes down to the image for this machine.
func resolveImageDesc(s *content.Store, desc v1.Descriptor, depth int) (v1.Hash, error) {
	if !desc.MediaType.IsIndex() {
		return desc.Digest, nil
	}
	if depth == 4 {
		return v1.Hash{}, errors.New("indexes nested too deep")
	}
	raw, err := s.ReadBlob(desc.Digest, maxManifestSize)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("index %s: %w", desc.Digest, err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("index %s: %w", desc.Digest, err)
	}
	for _, c := range idx.Manifests {
		if c.Platform != nil && c.Platform.OS == "linux" && c.Platform.Architecture == runtime.GOARCH {
			return resolveImageDesc(s, c, depth+1)
		}
	}
	return v1.Hash{}, fmt.Errorf("index %s has no linux/%s image", desc.Digest, runtime.GOARCH)
}

// ociNames reads an image's names from its index.json annotations: the
// containerd name, else a ref.name that is a full reference.
func ociNames(desc v1.Descriptor) []string {
	for _, k := range []string{AnnotationContainerdName, AnnotationRefName} {
		v := desc.Annotations[k]
		if v == "" || (k == AnnotationRefName && !strings.ContainsAny(v, "/:")) {
			continue
		}
		if n, err := parseTag(v); err == nil {
			return []string{n}
		}
	}
	return nil
}

// dockerEntry is one image of a docker-save manifest.json.
type dockerEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// loadDocker stores the images of a docker-save archive: configs first
// (read whole, they are small), then the layers, then a manifest per image.
func loadDocker(ctx context.Context, s *content.Store, p string, rawManifest []byte) ([]Loaded, error) {
	var entries []dockerEntry
	if err := json.Unmarshal(rawManifest, &entries); err != nil {
		return nil, fmt.Errorf("parse manifest.json: %w", err)
	}
	if len(entries) == 0 {
		return nil, errors.New("manifest.json lists no images")
	}
	wantCfg := map[string]bool{}
	for _, e := range entries {
		wantCfg[archiveEntry(e.Config)] = true
	}
	configs, err := readFiles(ctx, p, func(n string) bool { return wantCfg[n] }, maxConfigSize)
	if err != nil {
		return nil, err
	}
	// diffIDs maps each layer file to the diff ID the configs give it.
	diffIDs := map[string]v1.Hash{}
	for _, e := range entries {
		raw, ok := configs[archiveEntry(e.Config)]
		if !ok {
			return nil, fmt.Errorf("config %s is not in the archive", e.Config)
		}
		if err := checkNamedDigest(e.Config, raw); err != nil {
			return nil, err
		}
		cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("parse config %s: %w", e.Config, err)
		}
		if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
			return nil, fmt.Errorf("image %s: %d layers, config has %d diff IDs", e.Config, len(e.Layers), len(cfg.RootFS.DiffIDs))
		}
		for j, l := range e.Layers {
			n := archiveEntry(l)
			if d, ok := diffIDs[n]; ok && d != cfg.RootFS.DiffIDs[j] {
				return nil, fmt.Errorf("layer %s has two diff IDs", l)
			}
			diffIDs[n] = cfg.RootFS.DiffIDs[j]
		}
	}
	layers := map[string]v1.Descriptor{}
	err = eachFile(ctx, p, func(n string, _ int64, r io.Reader) error {
		diffID, ok := diffIDs[n]
		if !ok {
			return nil
		}
		if _, done := layers[n]; done {
			return nil
		}
		desc, err := storeDockerLayer(ctx, s, r, diffID)
		if err != nil {
			return fmt.Errorf("layer %s: %w", n, err)
		}
		layers[n] = desc
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Loaded
	for _, e := range entries {
		raw := configs[archiveEntry(e.Config)]
		cd, _, err := s.WriteBlob(ctx, bytes.NewReader(raw), v1.Hash{})
		if err != nil {
			return nil, fmt.Errorf("store config: %w", err)
		}
		m := &v1.Manifest{
			SchemaVersion: 2,
			Config:        v1.Descriptor{Digest: cd, Size: int64(len(raw))},
		}
		for _, l := range e.Layers {
			desc, ok := layers[archiveEntry(l)]
			if !ok {
				return nil, fmt.Errorf("layer %s is not in the archive", l)
			}
			m.Layers = append(m.Layers, desc)
		}
		setMediaTypes(m, MediaTypesDocker)
		for _, l := range m.Layers {
			if l.MediaType == types.OCILayerZStd {
				setMediaTypes(m, MediaTypesOCI)
				break
			}
		}
		rawM, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("encode manifest: %w", err)
		}
		md, _, err := s.WriteBlob(ctx, bytes.NewReader(rawM), v1.Hash{})
		if err != nil {
			return nil, fmt.Errorf("store manifest: %w", err)
		}
		ld := Loaded{Digest: md}
		for _, t := range e.RepoTags {
			n, err := parseTag(t)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", e.Config, err)
			}
			ld.Names = append(ld.Names, n)
		}
		// The archive's tag order is not meaningful (ggcr writes it from a
		// map): sort, so loading is deterministic.
		sort.Strings(ld.Names)
		out = append(out, ld)
	}
	return out, nil
}

// checkNamedDigest checks raw against the digest a file name spells
// ("<hex>.json", "sha256:<hex>", "blobs/sha256/<hex>"), if it spells one.
func checkNamedDigest(n string, raw []byte) error {
	base := strings.TrimSuffix(path.Base(archiveEntry(n)), ".json")
	base = strings.TrimPrefix(base, "sha256:")
	if len(base) != 64 {
		return nil
	}
	if _, err := hex.DecodeString(base); err != nil {
		return nil
	}
	sum := sha256.Sum256(raw)
	if hex.EncodeToString(sum[:]) != base {
		return fmt.Errorf("config %s: %w", n, content.ErrDigestMismatch)
	}
	return nil
}

// storeDockerLayer stores one layer file: an uncompressed tar is
// compressed with gzip, a compressed one is stored as it is. Either way the
// uncompressed bytes must hash to diffID.
func storeDockerLayer(ctx context.Context, s *content.Store, r io.Reader, diffID v1.Hash) (v1.Descriptor, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(4)
	if !bytes.HasPrefix(head, gzipMagic) && !bytes.HasPrefix(head, zstdMagic) {
		info, err := s.WriteLayer(ctx, func(w io.Writer) error {
			_, err := io.Copy(w, br)
			return err
		}, content.LayerOptions{Compression: content.Gzip})
		if err != nil {
			return v1.Descriptor{}, err
		}
		if info.DiffID != diffID {
			return v1.Descriptor{}, fmt.Errorf("content is %s, config says %s: %w", info.DiffID, diffID, content.ErrDigestMismatch)
		}
		return v1.Descriptor{Digest: info.Digest, Size: info.Size, MediaType: types.MediaType(info.MediaType)}, nil
	}
	mt := types.OCILayer
	if bytes.HasPrefix(head, zstdMagic) {
		mt = types.OCILayerZStd
	}
	// Hash the decompressed stream while the compressed one is stored.
	pr, pw := io.Pipe()
	sumc := make(chan error, 1)
	h := sha256.New()
	go func() {
		rc, err := Decompress(pr)
		if err == nil {
			_, err = io.Copy(h, rc)
			rc.Close()
		}
		pr.CloseWithError(err)
		sumc <- err
	}()
	// The stored blob matches its own digest whatever the diff ID check
	// says; an image whose diff ID is wrong is just never written.
	d, n, err := s.WriteBlob(ctx, io.TeeReader(br, pw), v1.Hash{})
	pw.CloseWithError(err)
	derr := <-sumc
	if err != nil {
		return v1.Descriptor{}, err
	}
	got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	if derr != nil || got != diffID {
		if derr != nil {
			return v1.Descriptor{}, fmt.Errorf("decompress: %w", derr)
		}
		return v1.Descriptor{}, fmt.Errorf("content is %s, config says %s: %w", got, diffID, content.ErrDigestMismatch)
	}
	return v1.Descriptor{Digest: d, Size: n, MediaType: mt}, nil
}

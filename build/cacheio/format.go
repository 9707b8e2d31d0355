package cacheio

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/cache"
)

// Media types, annotations and names of the cache format.
const (
	// FormatVersion is Config.Version; Decode refuses any other.
	FormatVersion = "builder.cache.v1"
	// ConfigMediaType is the media type of the config blob of a cache
	// manifest.
	ConfigMediaType = "application/vnd.builder.cache.config.v1+json"
	// ArtifactType is the artifactType of a cache manifest.
	ArtifactType = "application/vnd.builder.cache.v1"
	// AnnotationMountID is the layer annotation naming the cache mount
	// (RUN --mount=type=cache id) whose contents a layer holds.
	AnnotationMountID = "builder.cache.mount.id"
	// InlineField is the top-level image config field that holds an
	// inline cache.
	InlineField = "builder.cache.v1"
)

// ErrInvalid marks cache metadata that does not follow the format.
var ErrInvalid = errors.New("invalid cache metadata")

// maxConfigSize bounds the cache config and manifest read into memory.
const maxConfigSize = 64 << 20

// Mount is the exported content of one cache mount: a layer tar of the
// mount's directory (without the directory itself).
type Mount struct {
	ID        string  `json:"id"`
	DiffID    v1.Hash `json:"diffID"`
	Digest    v1.Hash `json:"digest"`
	Size      int64   `json:"size"`
	MediaType string  `json:"mediaType"`
}

// Config is the content of a cache config blob (or of an inline cache).
type Config struct {
	Version string `json:"version"`
	// Records are the cached steps, each with its key.
	Records []cache.Record `json:"records"`
	Mounts  []Mount        `json:"mounts,omitempty"`
	// Sums are checksums of COPY --from sources by their memo key (the
	// source's chain ID and the request, hashed): with them, a build
	// keys such a COPY without fetching and unpacking the source.
	Sums map[string]string `json:"sums,omitempty"`
	// Used is when each record was last used (hit or written) by any
	// writer of a merged registry cache, which evicts the least recently
	// used records first. Caches that are not merged leave it out.
	Used map[cache.Key]time.Time `json:"used,omitempty"`
}

// Encode returns the canonical JSON of c, with Version set.
func Encode(c Config) ([]byte, error) {
	c.Version = FormatVersion
	if c.Records == nil {
		c.Records = []cache.Record{}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	dt, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode cache config: %w", err)
	}
	return dt, nil
}

// Decode parses and validates a cache config.
func Decode(dt []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(dt))
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("decode cache config: %w: %w", ErrInvalid, err)
	}
	if c.Version != FormatVersion {
		return Config{}, fmt.Errorf("decode cache config: version %q, want %q: %w", c.Version, FormatVersion, ErrInvalid)
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// validate checks what Import relies on: well-formed keys, digests and
// sizes, and layer media types builder can unpack.
func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("cache config: %s: %w", fmt.Sprintf(format, args...), ErrInvalid)
	}
	for i, r := range c.Records {
		if !r.Key.Valid() {
			return bad("record %d: key %q is not a hex sha256", i, r.Key)
		}
		if r.Empty {
			if r.Digest != (v1.Hash{}) || r.DiffID != (v1.Hash{}) {
				return bad("record %s: empty but names a layer", r.Key)
			}
			continue
		}
		if !validHash(r.Digest) || !validHash(r.DiffID) {
			return bad("record %s: bad digest or diff ID", r.Key)
		}
		if r.Size < 0 {
			return bad("record %s: negative size", r.Key)
		}
		if !LayerMediaType(r.MediaType) {
			return bad("record %s: layer media type %q", r.Key, r.MediaType)
		}
	}
	for k, sum := range c.Sums {
		if len(k) != 64 || !isHex(k) {
			return bad("sum key %q is not a hex sha256", k)
		}
		if d, ok := strings.CutPrefix(sum, "sha256:"); !ok || len(d) != 64 || !isHex(d) {
			return bad("sum %s: %q is not a sha256 digest", k, sum)
		}
	}
	for k := range c.Used {
		if !k.Valid() {
			return bad("last use of %q: not a hex sha256 key", k)
		}
	}
	for i, m := range c.Mounts {
		if m.ID == "" {
			return bad("mount %d: no id", i)
		}
		if !validHash(m.Digest) || !validHash(m.DiffID) || m.Size < 0 || !LayerMediaType(m.MediaType) {
			return bad("mount %q: bad layer", m.ID)
		}
	}
	return nil
}

// LayerMediaType reports whether mt is a layer media type builder can
// unpack: OCI or Docker tar, gzip or zstd.
func LayerMediaType(mt string) bool {
	switch types.MediaType(mt) {
	case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer,
		types.DockerLayer, types.DockerUncompressedLayer:
		return true
	}
	return false
}

func validHash(h v1.Hash) bool {
	return h.Algorithm == "sha256" && len(h.Hex) == 64 && isHex(h.Hex)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// descriptors returns the manifest layers of c: each record layer once, in
// the order records first name it, then the mounts, annotated with their id.
func (c Config) descriptors() []v1.Descriptor {
	var out []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, r := range c.Records {
		if r.Empty || seen[r.Digest] {
			continue
		}
		seen[r.Digest] = true
		out = append(out, v1.Descriptor{MediaType: types.MediaType(r.MediaType), Digest: r.Digest, Size: r.Size})
	}
	for _, m := range c.Mounts {
		out = append(out, v1.Descriptor{MediaType: types.MediaType(m.MediaType), Digest: m.Digest, Size: m.Size,
			Annotations: map[string]string{AnnotationMountID: m.ID}})
	}
	return out
}

// checkLayers makes sure every blob c names is one of the manifest's
// layers, with the same size, so nothing outside the manifest is fetched.
func (c Config) checkLayers(layers []v1.Descriptor) error {
	have := map[v1.Hash]int64{}
	for _, l := range layers {
		have[l.Digest] = l.Size
	}
	check := func(d v1.Hash, size int64, what string) error {
		s, ok := have[d]
		if !ok {
			return fmt.Errorf("cache config: %s names %s, which the manifest does not list: %w", what, d, ErrInvalid)
		}
		if s != size {
			return fmt.Errorf("cache config: %s gives %s size %d, the manifest %d: %w", what, d, size, s, ErrInvalid)
		}
		return nil
	}
	for _, r := range c.Records {
		if r.Empty {
			continue
		}
		if err := check(r.Digest, r.Size, "record "+string(r.Key)); err != nil {
			return err
		}
	}
	for _, m := range c.Mounts {
		if err := check(m.Digest, m.Size, "mount "+m.ID); err != nil {
			return err
		}
	}
	return nil
}

// AddInline returns the image config rawConfig with c (its mounts left
// out) added as the top-level field InlineField. rawConfig must be a JSON
// object without that field; the rest of it is kept byte for byte.
func AddInline(rawConfig []byte, c Config) ([]byte, error) {
	c.Mounts, c.Used = nil, nil
	dt, err := Encode(c)
	if err != nil {
		return nil, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(rawConfig, &probe); err != nil {
		return nil, fmt.Errorf("add inline cache: %w", err)
	}
	if _, ok := probe[InlineField]; ok {
		return nil, fmt.Errorf("add inline cache: config already has %s", InlineField)
	}
	raw := bytes.TrimRight(rawConfig, " \t\r\n")
	out := make([]byte, 0, len(raw)+len(dt)+32)
	out = append(out, raw[:len(raw)-1]...)
	if len(probe) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"`+InlineField+`":`...)
	out = append(out, dt...)
	return append(out, '}'), nil
}

// ExtractInline returns the inline cache of an image config; ok is false
// when the config has none.
func ExtractInline(rawConfig []byte) (c Config, ok bool, err error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(rawConfig, &fields); err != nil {
		return Config{}, false, fmt.Errorf("read image config: %w", err)
	}
	dt, ok := fields[InlineField]
	if !ok {
		return Config{}, false, nil
	}
	c, err = Decode(dt)
	if err != nil {
		return Config{}, false, err
	}
	if len(c.Mounts) > 0 {
		return Config{}, false, fmt.Errorf("inline cache: mounts cannot be inline: %w", ErrInvalid)
	}
	return c, true, nil
}

package export

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrAmbiguous is an image ID prefix that more than one image has.
var ErrAmbiguous = errors.New("ambiguous image ID")

// MinIDPrefix is the shortest image ID prefix Resolve accepts, so that a
// mistyped short name is not taken for an ID.
const MinIDPrefix = 4

// Resolved is an image found by Resolve: its descriptor in the index and
// every name that points at it, sorted.
type Resolved struct {
	Desc  v1.Descriptor
	Names []string
	ByID  bool // ref was an image ID or digest, not a name
}

// Resolve finds the local image ref names. ref is a name ("app",
// "app:1", "app@sha256:…", see Lookup) or an image ID: the config digest
// as docker shows it ("sha256:<hex>" or the bare hex), the manifest digest,
// or a unique prefix of either of at least MinIDPrefix hex digits. A name
// wins over an ID prefix spelled the same; "sha256:…" and 64 hex digits
// are always IDs. An unknown ref wraps ErrNotFound; a prefix that more
// than one image has wraps ErrAmbiguous.
func (x *Index) Resolve(ref string) (Resolved, error) {
	prefix, onlyID, isID := parseID(ref)
	if !onlyID {
		d, err := x.Lookup(ref)
		if err == nil {
			names, err := x.Names(d.Digest)
			return Resolved{Desc: d, Names: names}, err
		}
		if !isID || !errors.Is(err, ErrNotFound) {
			return Resolved{}, err
		}
	}
	if !isID {
		return Resolved{}, fmt.Errorf("lookup %s: %w", ref, ErrNotFound)
	}
	im, err := x.read()
	if err != nil {
		return Resolved{}, fmt.Errorf("lookup %s: %w", ref, err)
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		if refName(d) == "" || slices.ContainsFunc(found, func(f v1.Descriptor) bool { return f.Digest == d.Digest }) {
			continue
		}
		if strings.HasPrefix(d.Digest.Hex, prefix) || strings.HasPrefix(x.ImageID(d.Digest).Hex, prefix) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return Resolved{}, fmt.Errorf("lookup %s: %w", ref, ErrNotFound)
	case 1:
	default:
		return Resolved{}, fmt.Errorf("image ID %s: %w: %d images have it", ref, ErrAmbiguous, len(found))
	}
	names, err := x.Names(found[0].Digest)
	return Resolved{Desc: found[0], Names: names, ByID: true}, err
}

// parseID reads ref as an image ID: prefix is its hex digits, onlyID
// says it can be nothing else ("sha256:" or 64 digits), isID that it can
// be one.
func parseID(ref string) (prefix string, onlyID, isID bool) {
	hex, algo := strings.CutPrefix(ref, "sha256:")
	if len(hex) < MinIDPrefix || len(hex) > 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return "", false, false
	}
	return hex, algo || len(hex) == 64, true
}

// ImageID returns the ID docker shows for the manifest d in the store: its
// config digest; for an image index, or a manifest that cannot be read,
// the digest d itself.
func (x *Index) ImageID(d v1.Hash) v1.Hash {
	raw, err := x.s.ReadBlob(d, maxManifestSize)
	if err != nil {
		return d
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil || m.Config.Digest == (v1.Hash{}) {
		return d
	}
	return m.Config.Digest
}

// Names returns the names in the index that point at the manifest d,
// sorted.
func (x *Index) Names(d v1.Hash) ([]string, error) {
	im, err := x.read()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range im.Manifests {
		if n := refName(m); n != "" && m.Digest == d {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

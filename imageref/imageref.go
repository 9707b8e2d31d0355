// Package imageref spells image references the way Docker reads them, so
// that the store's tags, archives and registry messages name an image the
// same way. It is a leaf package: the store side (export) and the registry
// side (build/pull, build/registry) both use it without importing each
// other.
package imageref

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

// Normalize returns the full form of an image reference the way Docker
// reads it: "app" is "docker.io/library/app:latest", "ghcr.io/o/app" is
// "ghcr.io/o/app:latest", and a digest reference keeps its digest
// ("app@sha256:…" is "docker.io/library/app@sha256:…"). A reference with
// both ("app:1.0@sha256:…") names the image by its digest, as in Docker:
// the tag is dropped. Docker Hub is spelled docker.io, not index.docker.io.
func Normalize(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parse image name %q: %w", ref, err)
	}
	return Spell(r), nil
}

// Spell spells a parsed reference in the form Normalize returns.
func Spell(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	repo := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + r.Identifier()
}

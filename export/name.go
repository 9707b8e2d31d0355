package export

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

// NormalizeName returns the full form of an image reference the way Docker
// reads it: "app" is "docker.io/library/app:latest", "ghcr.io/o/app" is
// "ghcr.io/o/app:latest", and a digest reference keeps its digest
// ("app@sha256:…" is "docker.io/library/app@sha256:…"). Docker Hub is
// spelled docker.io, not index.docker.io.
func NormalizeName(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parse image name %q: %w", ref, err)
	}
	return normalized(r), nil
}

// normalized spells r in the form NormalizeName returns.
func normalized(r name.Reference) string {
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

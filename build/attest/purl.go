package attest

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/package-url/packageurl-go"
)

// ImagePURL spells an image reference as a package URL, as BuildKit's
// purl.RefToPURL does: the familiar name (Docker Hub's library/ dropped)
// split into namespace and name, the tag (default latest) as version, a
// digest reference's digest and the platform as qualifiers. purlType is
// packageurl.TypeDocker for a registry image, TypeOCI for a local one.
func ImagePURL(purlType, ref string, p *v1.Platform) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parse image name %q: %w", ref, err)
	}
	var qualifiers packageurl.Qualifiers
	version := ""
	switch r := r.(type) {
	case name.Digest:
		qualifiers = append(qualifiers, packageurl.Qualifier{Key: "digest", Value: r.DigestStr()})
		// "repo:tag@sha256:…" keeps its tag as the version.
		if before, _, ok := strings.Cut(ref, "@"); ok {
			if t, err := name.NewTag(before); err == nil && strings.Contains(before[strings.LastIndex(before, "/")+1:], ":") {
				version = t.TagStr()
			}
		}
	case name.Tag:
		version = r.TagStr()
	}
	full := familiarName(r.Context())
	ns, base := "", full
	if i := strings.LastIndex(full, "/"); i >= 0 {
		ns, base = full[:i], full[i+1:]
	}
	if p != nil && p.OS != "" {
		qualifiers = append(qualifiers, packageurl.Qualifier{Key: "platform", Value: platformString(*p)})
	}
	return packageurl.NewPackageURL(purlType, ns, base, version, qualifiers, "").ToString(), nil
}

// familiarName is a repository as Docker shows it: docker.io/library/x is
// x, docker.io/o/x is o/x, others keep their registry.
func familiarName(repo name.Repository) string {
	reg := repo.RegistryStr()
	path := repo.RepositoryStr()
	if reg != name.DefaultRegistry && reg != "docker.io" {
		return reg + "/" + path
	}
	return strings.TrimPrefix(path, "library/")
}

// platformString formats p as os/arch[/variant].
func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

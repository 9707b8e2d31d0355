package attest

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Package URL types of images.
const (
	PURLDocker = "docker" // an image from a registry
	PURLOCI    = "oci"    // a local image
)

// ImagePURL spells an image reference as a package URL, as BuildKit
// v0.26's purl.RefToPURL does with the packageurl-go it vendors (v0.1.1):
// the familiar name (Docker Hub's library/ dropped) split into namespace
// and name, each segment query-escaped (so a registry's port colon is
// %3A), the tag (default latest) as version, a digest reference's digest
// and the platform as path-escaped qualifiers. purlType is PURLDocker for
// a registry image, PURLOCI for a local one.
func ImagePURL(purlType, ref string, p *v1.Platform) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parse image name %q: %w", ref, err)
	}
	var qualifiers []string
	version := ""
	switch r := r.(type) {
	case name.Digest:
		qualifiers = append(qualifiers, "digest="+url.PathEscape(r.DigestStr()))
		// "repo:tag@sha256:…" keeps its tag as the version.
		if before, _, ok := strings.Cut(ref, "@"); ok {
			if t, err := name.NewTag(before); err == nil && strings.Contains(before[strings.LastIndex(before, "/")+1:], ":") {
				version = t.TagStr()
			}
		}
	case name.Tag:
		version = r.TagStr()
	}
	if p != nil && p.OS != "" {
		qualifiers = append(qualifiers, "platform="+url.PathEscape(platformString(*p)))
	}
	segs := strings.Split(familiarName(r.Context()), "/")
	for i, s := range segs {
		segs[i] = url.QueryEscape(s)
	}
	u := "pkg:" + purlType + "/" + strings.Join(segs, "/")
	if version != "" {
		u += "@" + url.PathEscape(version)
	}
	if len(qualifiers) > 0 {
		u += "?" + strings.Join(qualifiers, "&")
	}
	return u, nil
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

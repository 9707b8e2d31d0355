package build

import (
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Annotations are OCI annotations for the objects a build writes, by
// level, as buildx's --annotation sorts them.
type Annotations struct {
	Manifest           map[string]string // on the image manifest
	ManifestDescriptor map[string]string // on the manifest's descriptor in an index
	Index              map[string]string // on the image index
	IndexDescriptor    map[string]string // on the index's descriptor in an OCI layout
}

// ParseAnnotation adds one --annotation value to a: KEY=VALUE, or
// TYPE:KEY=VALUE or TYPE[PLATFORM,...]:KEY=VALUE with TYPE one of manifest,
// manifest-descriptor, index, index-descriptor (several comma-separated),
// as buildx reads it. Without TYPE the annotation goes on the manifest.
// An annotation for platforms that do not include platform is dropped.
func (a *Annotations) ParseAnnotation(s string, platform v1.Platform) error {
	kv := s
	types := "manifest"
	var platforms string
	// KEY may hold ':' (e.g. org.opencontainers.image.url) only after a
	// type prefix, which is known by its first word.
	if i := strings.IndexAny(s, ":="); i >= 0 && s[i] == ':' {
		types, kv = s[:i], s[i+1:]
		if j := strings.IndexByte(types, '['); j >= 0 {
			if !strings.HasSuffix(types, "]") {
				return fmt.Errorf("--annotation %q: unterminated platform list", s)
			}
			types, platforms = types[:j], types[j+1:len(types)-1]
		}
	}
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("--annotation %q: want [TYPE:]KEY=VALUE", s)
	}
	var maps []*map[string]string
	for _, t := range strings.Split(types, ",") {
		switch strings.TrimSpace(t) {
		case "manifest":
			maps = append(maps, &a.Manifest)
		case "manifest-descriptor":
			maps = append(maps, &a.ManifestDescriptor)
		case "index":
			maps = append(maps, &a.Index)
		case "index-descriptor":
			maps = append(maps, &a.IndexDescriptor)
		default:
			return fmt.Errorf("--annotation %q: unknown type %q: use manifest, manifest-descriptor, index or index-descriptor", s, t)
		}
	}
	if platforms != "" && !platformListed(platforms, platform) {
		return nil
	}
	for _, m := range maps {
		if *m == nil {
			*m = map[string]string{}
		}
		(*m)[k] = v
	}
	return nil
}

// ParseAnnotations reads every --annotation value for one platform: the
// annotations of that platform's image. A value that is malformed is an
// error whatever platform it names.
func ParseAnnotations(specs []string, platform v1.Platform) (Annotations, error) {
	var a Annotations
	for _, s := range specs {
		if err := a.ParseAnnotation(s, platform); err != nil {
			return Annotations{}, err
		}
	}
	return a, nil
}

// platformListed reports whether the comma-separated list names p.
func platformListed(list string, p v1.Platform) bool {
	for _, s := range strings.Split(list, ",") {
		q, err := v1.ParsePlatform(strings.TrimSpace(s))
		if err == nil && q.OS == p.OS && q.Architecture == p.Architecture && (q.Variant == "" || q.Variant == p.Variant) {
			return true
		}
	}
	return false
}

// singlePlatform refuses the annotations a single-platform image has no
// place for, as BuildKit does for the index ones.
func (a Annotations) singlePlatform() error {
	if len(a.Index)+len(a.IndexDescriptor) > 0 {
		return fmt.Errorf("--annotation: index annotations not supported for single platform export")
	}
	if len(a.ManifestDescriptor) > 0 {
		return fmt.Errorf("--annotation: manifest-descriptor annotations need a multi-platform build (an index to hold the descriptor)")
	}
	return nil
}

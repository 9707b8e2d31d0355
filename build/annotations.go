package build

import (
	"fmt"
	"maps"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/export"
)

// Annotations are OCI annotations for the objects a build writes, by
// level, as buildx's --annotation sorts them.
type Annotations struct {
	Manifest           map[string]string // on the image manifest
	ManifestDescriptor map[string]string // on the manifest's descriptor in an index or an OCI layout's index.json
	Index              map[string]string // on the image index
	IndexDescriptor    map[string]string // on the index's descriptor in an OCI layout's index.json
}

// MaxAnnotationBytes bounds the keys and values of every --annotation of a
// build together: they are copied into manifests, indexes and index.json,
// and a registry refuses a manifest past a few MiB (distribution: 4 MiB).
const MaxAnnotationBytes = 1 << 20

// annotationType is buildx's TYPE[PLATFORM] of one --annotation prefix,
// which builder extends to TYPE[PLATFORM,...].
var annotationType = regexp.MustCompile(`^([a-z-]+)(?:\[([A-Za-z0-9_/,-]+)\])?$`)

// annotationKey is what BuildKit takes as an annotation key (exptypes'
// "annotation...\.(\S+)$"): anything else it drops without a word.
var annotationKey = regexp.MustCompile(`^\S+$`)

// ParseAnnotation adds one --annotation value to a, as buildx reads it:
// KEY=VALUE, or TYPES:KEY=VALUE with TYPES a comma-separated list of
// manifest, manifest-descriptor, index or index-descriptor, each with an
// optional [PLATFORM] (builder also takes a list, [PLATFORM,...], which
// buildx refuses). Without TYPES the annotation goes on the manifest.
// A manifest or manifest-descriptor annotation for another platform than
// platform is dropped; index ones go on the index whatever platform they
// name, as BuildKit does. buildx's errors are kept; a key BuildKit would
// drop silently (empty, or holding white space) is refused.
func (a *Annotations) ParseAnnotation(s string, platform v1.Platform) error {
	if s == "" {
		return nil // buildx skips empty values
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("invalid annotation %q, expected key=value", s)
	}
	types, key, typed := strings.Cut(k, ":")
	if !typed {
		types, key = "manifest", k
	}
	if !annotationKey.MatchString(key) {
		return fmt.Errorf("invalid annotation %q: the key is empty or holds white space", s)
	}
	type target struct {
		m       *map[string]string
		mine    bool
		perPlat bool
	}
	var targets []target
	for _, tp := range splitTypes(types) {
		g := annotationType.FindStringSubmatch(tp)
		if g == nil {
			return fmt.Errorf("invalid annotation type %q, expected type and optional platform in square brackets", tp)
		}
		qs, err := annotationPlatforms(g[2])
		if err != nil {
			return fmt.Errorf("invalid annotation %q: %w", s, err)
		}
		mine := len(qs) == 0
		for _, q := range qs {
			mine = mine || platformMatches(q, platform)
		}
		switch g[1] {
		case "manifest":
			targets = append(targets, target{&a.Manifest, mine, true})
		case "manifest-descriptor":
			targets = append(targets, target{&a.ManifestDescriptor, mine, true})
		case "index":
			targets = append(targets, target{m: &a.Index})
		case "index-descriptor":
			targets = append(targets, target{m: &a.IndexDescriptor})
		default:
			return fmt.Errorf("unknown annotation type %q", g[1])
		}
	}
	for _, t := range targets {
		if t.perPlat && !t.mine {
			continue
		}
		if *t.m == nil {
			*t.m = map[string]string{}
		}
		(*t.m)[key] = v
	}
	return nil
}

// ParseAnnotations reads every --annotation value for one platform: the
// annotations of that platform's image. A value that is malformed is an
// error whatever platform it names, and so are values that together pass
// MaxAnnotationBytes.
func ParseAnnotations(specs []string, platform v1.Platform) (Annotations, error) {
	var a Annotations
	size := 0
	for _, s := range specs {
		size += len(s)
		if size > MaxAnnotationBytes {
			return Annotations{}, fmt.Errorf("--annotation: the values pass %d bytes in all, more than a manifest may carry", MaxAnnotationBytes)
		}
		if err := a.ParseAnnotation(s, platform); err != nil {
			return Annotations{}, fmt.Errorf("parse annotations: %w", err)
		}
	}
	return a, nil
}

// splitTypes splits the TYPES of an --annotation at the commas that are
// not inside a [PLATFORM,...] list.
func splitTypes(types string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range types {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, types[start:i])
				start = i + 1
			}
		}
	}
	return append(out, types[start:])
}

// annotationPlatforms parses the platforms between an annotation type's
// brackets; an empty list is none.
func annotationPlatforms(list string) ([]v1.Platform, error) {
	if list == "" {
		return nil, nil
	}
	var out []v1.Platform
	for _, s := range strings.Split(list, ",") {
		q, err := v1.ParsePlatform(s)
		if err != nil || q.OS == "" || q.Architecture == "" {
			return nil, fmt.Errorf("invalid platform %q", s)
		}
		out = append(out, *q)
	}
	return out, nil
}

// platformMatches reports whether the platform q named in an annotation is
// p; a q without variant matches every variant.
func platformMatches(q, p v1.Platform) bool {
	return q.OS == p.OS && q.Architecture == p.Architecture && (q.Variant == "" || q.Variant == p.Variant)
}

// checkAnnotationPlatforms refuses, for a multi-platform build, a manifest
// or manifest-descriptor annotation naming a platform that is not built,
// with BuildKit's error; a single-platform build drops it.
func checkAnnotationPlatforms(specs []string, platforms []v1.Platform) error {
	if len(platforms) < 2 {
		return nil
	}
	for _, s := range specs {
		k, _, _ := strings.Cut(s, "=")
		types, _, typed := strings.Cut(k, ":")
		if !typed {
			continue
		}
		for _, tp := range splitTypes(types) {
			g := annotationType.FindStringSubmatch(tp)
			if g == nil || strings.HasPrefix(g[1], "index") {
				continue
			}
			qs, _ := annotationPlatforms(g[2]) // ParseAnnotations refuses bad ones
			for _, q := range qs {
				found := false
				for _, p := range platforms {
					found = found || platformMatches(q, p)
				}
				if !found {
					return fmt.Errorf("invalid annotation: no platform %s found in source", export.PlatformString(q))
				}
			}
		}
	}
	return nil
}

// singlePlatform refuses the annotations a single-platform image has no
// place for, with BuildKit's words: the index ones. Its manifest-descriptor
// ones go on the image's entry in an OCI layout's index.json.
func (a Annotations) singlePlatform() error {
	if len(a.Index)+len(a.IndexDescriptor) > 0 {
		return fmt.Errorf("--annotation: index annotations not supported for single platform export")
	}
	return nil
}

// descriptorAnnotations returns a copy of m, or nil for an empty m.
func descriptorAnnotations(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

package cacheio

import (
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"

	"github.com/docker/go-units"
)

// Cache types of a Spec.
const (
	TypeRegistry = "registry"
	TypeLocal    = "local"
	TypeInline   = "inline"
)

// Export modes of a Spec.
const (
	ModeMin = "min" // the steps of the final image
	ModeMax = "max" // every step of every stage the build ran or hit
)

// DefaultTag is the name an OCI layout directory gives the cache in its
// index.json (annotation org.opencontainers.image.ref.name) unless tag=
// says otherwise.
const DefaultTag = "latest"

// Spec is one --cache-to or --cache-from value, parsed.
type Spec struct {
	Type string // TypeRegistry, TypeLocal or TypeInline
	Ref  string // registry: the reference
	Dir  string // local: the OCI layout directory (dest= or src=)
	Tag  string // local: the ref name in index.json; default DefaultTag
	// Mode is ModeMin (default) or ModeMax; export only.
	Mode string
	// Compression recompresses layers for the export ("gzip", "zstd",
	// "uncompressed"); "" keeps them as stored. Export only.
	Compression string
	// CacheMounts exports the contents of RUN --mount=type=cache
	// directories too. Export only.
	CacheMounts bool
	// Merge makes a registry export merge its records with those the
	// reference holds instead of replacing them (see Export); merge=
	// sets it, and it defaults to true with mode=max. Export only.
	Merge bool
	// MaxRecords and MaxSize bound a merged cache: at most that many
	// records and bytes of record layers, evicting the least recently
	// used records across every writer. 0 means no bound. Export only.
	MaxRecords int
	MaxSize    int64
}

// String names where the cache lives, for progress lines.
func (s Spec) String() string {
	switch s.Type {
	case TypeLocal:
		return s.Dir
	case TypeInline:
		return "inline"
	}
	return s.Ref
}

// ParseExport parses a --cache-to value the way buildx does:
// "type=registry,ref=REF[,mode=min|max][,compression=gzip|zstd|uncompressed][,cache-mounts=true]
// [,merge=true|false][,max-records=N][,max-size=SIZE]",
// "type=local,dest=DIR[,tag=T][,mode=…]" or "type=inline".
func ParseExport(v string) (Spec, error) {
	s, err := parse(v, true)
	if err != nil {
		return Spec{}, fmt.Errorf("parse --cache-to %q: %w", v, err)
	}
	return s, nil
}

// ParseImport parses a --cache-from value: "type=registry,ref=REF",
// "type=local,src=DIR[,tag=T]", or a bare REF (a registry cache or an
// image built with an inline cache).
func ParseImport(v string) (Spec, error) {
	s, err := parse(v, false)
	if err != nil {
		return Spec{}, fmt.Errorf("parse --cache-from %q: %w", v, err)
	}
	return s, nil
}

func parse(v string, export bool) (Spec, error) {
	if v == "" {
		return Spec{}, fmt.Errorf("empty value")
	}
	if !strings.Contains(v, "=") {
		if export {
			return Spec{}, fmt.Errorf("give type=registry,ref=REF, type=local,dest=DIR or type=inline")
		}
		return Spec{Type: TypeRegistry, Ref: v}, nil
	}
	fields, err := csv.NewReader(strings.NewReader(v)).Read()
	if err != nil {
		return Spec{}, err
	}
	s := Spec{Type: TypeRegistry}
	mergeSet := false
	for _, f := range fields {
		k, val, ok := strings.Cut(f, "=")
		if !ok {
			return Spec{}, fmt.Errorf("field %q must be key=value", f)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		exportOnly := false
		switch k {
		case "type":
			s.Type = val
		case "ref":
			s.Ref = val
		case "dest":
			if !export {
				return Spec{}, fmt.Errorf("dest= is for --cache-to; use src=")
			}
			s.Dir = val
		case "src":
			if export {
				return Spec{}, fmt.Errorf("src= is for --cache-from; use dest=")
			}
			s.Dir = val
		case "tag":
			s.Tag = val
		case "mode":
			exportOnly = true
			if val != ModeMin && val != ModeMax {
				return Spec{}, fmt.Errorf("mode %q: use min or max", val)
			}
			s.Mode = val
		case "compression":
			exportOnly = true
			if val != "gzip" && val != "zstd" && val != "uncompressed" {
				return Spec{}, fmt.Errorf("compression %q: use gzip, zstd or uncompressed", val)
			}
			s.Compression = val
		case "cache-mounts":
			exportOnly = true
			b, err := strconv.ParseBool(val)
			if err != nil {
				return Spec{}, fmt.Errorf("cache-mounts %q: use true or false", val)
			}
			s.CacheMounts = b
		case "merge":
			exportOnly = true
			b, err := strconv.ParseBool(val)
			if err != nil {
				return Spec{}, fmt.Errorf("merge %q: use true or false", val)
			}
			s.Merge, mergeSet = b, true
		case "max-records":
			exportOnly = true
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return Spec{}, fmt.Errorf("max-records %q: use a positive number", val)
			}
			s.MaxRecords = n
		case "max-size":
			exportOnly = true
			n, err := units.RAMInBytes(val)
			if err != nil || n < 1 {
				return Spec{}, fmt.Errorf("max-size %q: use a size such as 2GiB or 500MB", val)
			}
			s.MaxSize = n
		case "ignore-error", "oci-mediatypes", "image-manifest", "compression-level", "force-compression":
			// buildx options whose behaviour is builder's default (or
			// that change nothing here): accepted so scripts keep working.
			exportOnly = k != "ignore-error"
		default:
			return Spec{}, fmt.Errorf("unknown key %q", k)
		}
		if exportOnly && !export {
			return Spec{}, fmt.Errorf("%s= is for --cache-to", k)
		}
	}
	switch s.Type {
	case TypeRegistry:
		if s.Ref == "" {
			return Spec{}, fmt.Errorf("type=registry needs ref=")
		}
		if s.Dir != "" || s.Tag != "" {
			return Spec{}, fmt.Errorf("type=registry takes ref=, not dest=, src= or tag=")
		}
	case TypeLocal:
		if s.Merge || s.MaxRecords > 0 || s.MaxSize > 0 {
			return Spec{}, fmt.Errorf("merge=, max-records= and max-size= are for type=registry")
		}
		if s.Dir == "" {
			if export {
				return Spec{}, fmt.Errorf("type=local needs dest=")
			}
			return Spec{}, fmt.Errorf("type=local needs src=")
		}
		if s.Ref != "" {
			return Spec{}, fmt.Errorf("type=local takes a directory, not ref=")
		}
		if s.Tag == "" {
			s.Tag = DefaultTag
		}
	case TypeInline:
		if !export {
			return Spec{}, fmt.Errorf("type=inline is for --cache-to; import an inline cache with the image reference")
		}
		if s.Ref != "" || s.Dir != "" || s.CacheMounts || s.Compression != "" || s.Mode == ModeMax {
			return Spec{}, fmt.Errorf("type=inline takes no ref, dest, compression, cache-mounts or mode=max: it describes the image's own layers")
		}
	default:
		return Spec{}, fmt.Errorf("unknown cache type %q: use registry, local or inline", s.Type)
	}
	if export && s.Mode == "" {
		s.Mode = ModeMin
	}
	if s.Type == TypeRegistry && export && !mergeSet {
		s.Merge = s.Mode == ModeMax
	}
	if !s.Merge && (s.MaxRecords > 0 || s.MaxSize > 0) {
		return Spec{}, fmt.Errorf("max-records= and max-size= bound a merged cache; they need merge=true or mode=max")
	}
	return s, nil
}

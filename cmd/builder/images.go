package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"builder/export"
)

// version is set at link time by the Makefile.
var version = "dev"

func runVersion(ctx context.Context, g *globals, args []string) error {
	fmt.Printf("builder %s %s/%s\n", version, runtime.GOOS, runtime.GOARCH)
	return nil
}

// imageRow is one line of `builder images`, and what --format sees. Size
// is in decimal units (kB = 1000 bytes), as docker shows it.
type imageRow struct {
	ID           string `json:"ID"`
	Repository   string `json:"Repository"`
	Tag          string `json:"Tag"`
	Digest       string `json:"Digest"`
	CreatedAt    string `json:"CreatedAt"`
	CreatedSince string `json:"CreatedSince"`
	Size         string `json:"Size"`
	Name         string `json:"Name"` // the full name, docker.io/library/app:1
	// Platforms lists a multi-platform image's platforms, comma-separated
	// (linux/amd64,linux/arm64); empty for a single image.
	Platforms string `json:"Platforms,omitempty"`
	created   time.Time
	labels    map[string]string
}

func runImages(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("images", g)
	quiet := fs.BoolP("quiet", "q", false, "print only image IDs")
	format := fs.String("format", "", "print each image through a Go template ('{{.ID}} {{.Repository}}:{{.Tag}}'), or json for one JSON object a line")
	var filters []string
	fs.StringArrayVarP(&filters, "filter", "f", nil, "list only images that match: reference=PATTERN, dangling=true|false, label=KEY[=VALUE], before=IMAGE, since=IMAGE")
	fs.BoolP("all", "a", false, "list all images (the store keeps no intermediate images: the same list)")
	digests := fs.Bool("digests", false, "show the manifest digests")
	noTrunc := fs.Bool("no-trunc", false, "show full image IDs")
	usage := "builder images [OPTIONS] [REFERENCE]\n\n" +
		"List the images in the local store, newest first: repository, tag, image ID (the\n" +
		"config digest), when it was created and its size (decimal: 1 MB = 1000000 bytes;\n" +
		"manifest, config and compressed layers). REFERENCE is a reference= filter."
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("builder images takes at most one REFERENCE")
	}
	if fs.NArg() == 1 {
		filters = append(filters, "reference="+fs.Arg(0))
	}
	idx, err := export.OpenIndex(g.root)
	if err != nil {
		return err
	}
	entries, err := idx.List()
	if err != nil {
		return err
	}
	match, err := imageFilter(idx, filters)
	if err != nil {
		return err
	}
	now := time.Now()
	var rows []imageRow
	for _, e := range entries {
		if r := newImageRow(e, *noTrunc, now); match(r) {
			rows = append(rows, r)
		}
	}
	slices.SortStableFunc(rows, func(a, b imageRow) int { return b.created.Compare(a.created) })
	return writeImages(os.Stdout, rows, *quiet, *format, *digests)
}

// newImageRow describes an index entry as `images` shows it.
func newImageRow(e export.Entry, noTrunc bool, now time.Time) imageRow {
	r := imageRow{ID: e.ID.String(), Digest: e.Digest.String(), Size: humanSize(e.Size), Name: e.Name,
		created: e.Created, labels: e.Labels}
	if e.MediaType.IsIndex() {
		r.Platforms = strings.Join(e.Platforms, ",")
	}
	if !noTrunc {
		r.ID = shortID(r.ID)
	}
	r.Repository, r.Tag = e.Name, "<none>"
	if t, err := name.NewTag(e.Name); err == nil {
		r.Repository, r.Tag = familiarRepo(t.Context()), t.TagStr()
	}
	if !e.Created.IsZero() {
		r.CreatedAt = e.Created.UTC().Format("2006-01-02 15:04:05 -0700 MST")
		r.CreatedSince = age(now.Sub(e.Created))
	}
	return r
}

// shortID cuts an image ID to docker's 12 hex digits.
func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// familiarRepo spells a repository as docker shows it: docker.io and
// library/ left out.
func familiarRepo(r name.Repository) string {
	reg, repo := r.RegistryStr(), r.RepositoryStr()
	if reg != name.DefaultRegistry && reg != "docker.io" {
		return reg + "/" + repo
	}
	return strings.TrimPrefix(repo, "library/")
}

// imageFilter compiles --filter values into one predicate; all must hold,
// and several values of one key match if any does (as in docker).
func imageFilter(idx *export.Index, filters []string) (func(imageRow) bool, error) {
	var tests [][]func(imageRow) bool
	byKey := map[string]int{}
	for _, f := range filters {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, usagef("--filter %q is not KEY=VALUE", f)
		}
		var test func(imageRow) bool
		switch k {
		case "reference":
			if _, err := path.Match(v, ""); err != nil {
				return nil, usagef("--filter %q: %w", f, err)
			}
			test = func(r imageRow) bool {
				for _, s := range []string{r.Repository, r.Repository + ":" + r.Tag, r.Name} {
					if ok, _ := path.Match(v, s); ok {
						return true
					}
				}
				return false
			}
		case "dangling":
			if v != "true" && v != "false" {
				return nil, usagef("--filter %q: dangling is true or false", f)
			}
			// Every image in the index has a name: none is dangling.
			test = func(imageRow) bool { return v == "false" }
		case "label":
			lk, lv, hasValue := strings.Cut(v, "=")
			test = func(r imageRow) bool {
				got, ok := r.labels[lk]
				return ok && (!hasValue || got == lv)
			}
		case "before", "since":
			ref, err := idx.Resolve(v)
			if err != nil {
				return nil, fmt.Errorf("--filter %s: %w", f, err)
			}
			var t time.Time
			for _, e := range mustList(idx) {
				if e.Digest == ref.Desc.Digest {
					t = e.Created
				}
			}
			before := k == "before"
			test = func(r imageRow) bool {
				if before {
					return r.created.Before(t)
				}
				return r.created.After(t)
			}
		default:
			return nil, usagef("--filter %q: use reference=, dangling=, label=, before= or since=", f)
		}
		i, ok := byKey[k]
		if !ok {
			i = len(tests)
			byKey[k] = i
			tests = append(tests, nil)
		}
		tests[i] = append(tests[i], test)
	}
	return func(r imageRow) bool {
		for _, any := range tests {
			if !slices.ContainsFunc(any, func(t func(imageRow) bool) bool { return t(r) }) {
				return false
			}
		}
		return true
	}, nil
}

// mustList lists the index; an error lists nothing (List failed already
// once for the command if it fails at all).
func mustList(idx *export.Index) []export.Entry {
	entries, _ := idx.List()
	return entries
}

// writeImages prints rows as a table, IDs alone (quiet), JSON lines or
// through a template.
func writeImages(w io.Writer, rows []imageRow, quiet bool, format string, digests bool) error {
	switch {
	case quiet:
		for _, r := range rows {
			fmt.Fprintln(w, r.ID)
		}
		return nil
	case format == "json":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	case format != "":
		tmpl, err := parseTemplate(format)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := executeLine(w, tmpl, r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	if digests {
		fmt.Fprintln(tw, "REPOSITORY\tTAG\tDIGEST\tIMAGE ID\tCREATED\tSIZE")
	} else {
		fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
	}
	for _, r := range rows {
		if digests {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Repository, r.Tag, r.Digest, r.ID, r.CreatedSince, r.Size)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, r.Tag, r.ID, r.CreatedSince, r.Size)
		}
	}
	return tw.Flush()
}

// humanSize writes n bytes in decimal units, as docker does: 1.2MB is
// 1200000 bytes.
func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%cB", float64(n)/float64(div), "kMGTPE"[exp])
}

package imagediff

import (
	"bufio"
	"fmt"
	"io"
)

// Write prints the report for people: the manifest and config fields that
// differ ("path: old → new"), then each differing layer and its files, then
// a verdict line ("images are identical", "images differ only in
// timestamps" or "images differ").
func (r *Report) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	if r.Identical() {
		fmt.Fprintf(bw, "images are identical (%s)\n", r.A)
		if r.AttestationsCompared {
			fmt.Fprintln(bw, "attestations are identical")
		}
		return bw.Flush()
	}
	fmt.Fprintf(bw, "A: %s\nB: %s\n", r.A, r.B)
	section := func(title string, cs []Change) {
		if len(cs) == 0 {
			return
		}
		fmt.Fprintf(bw, "%s:\n", title)
		for _, c := range cs {
			fmt.Fprintf(bw, "  %s: %s → %s\n", c.Path, orAbsent(c.Old), orAbsent(c.New))
		}
	}
	section("manifest", r.Manifest)
	section("config", r.Config)
	for _, l := range r.Layers {
		switch {
		case l.A == nil:
			fmt.Fprintf(bw, "layer %d: only in B (%s)\n", l.Index, l.B.DiffID)
		case l.B == nil:
			fmt.Fprintf(bw, "layer %d: only in A (%s)\n", l.Index, l.A.DiffID)
		case l.A.DiffID == l.B.DiffID:
			fmt.Fprintf(bw, "layer %d: %s\n", l.Index, l.A.DiffID)
		default:
			fmt.Fprintf(bw, "layer %d: %s → %s\n", l.Index, l.A.DiffID, l.B.DiffID)
		}
		if l.A != nil && l.B != nil {
			if l.A.Digest != l.B.Digest {
				fmt.Fprintf(bw, "  (blob %s → %s)\n", l.A.Digest, l.B.Digest)
			}
			if l.A.MediaType != l.B.MediaType {
				fmt.Fprintf(bw, "  (media type %s → %s)\n", l.A.MediaType, l.B.MediaType)
			}
		}
		for _, n := range l.Notes {
			fmt.Fprintf(bw, "  %s\n", n)
		}
		for _, f := range l.Files {
			switch f.Field {
			case "added":
				fmt.Fprintf(bw, "  %s: added: %s\n", f.Path, f.New)
			case "removed":
				fmt.Fprintf(bw, "  %s: removed: %s\n", f.Path, f.Old)
			default:
				fmt.Fprintf(bw, "  %s: %s %s → %s\n", f.Path, f.Field, orAbsent(f.Old), orAbsent(f.New))
			}
		}
	}
	section("attestations", r.Attestations)
	switch {
	case r.A == r.B:
		fmt.Fprintln(bw, "images are identical; their attestations differ")
	case r.OnlyTimestamps():
		fmt.Fprintln(bw, "images differ only in timestamps")
	default:
		fmt.Fprintln(bw, "images differ")
	}
	return bw.Flush()
}

func orAbsent(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

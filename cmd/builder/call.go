package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"builder/build"
	"builder/parser"
)

// callRequest is a --call value: check, outline or targets, with an
// optional ",format=json" as buildx takes it.
type callRequest struct {
	name string
	json bool
	// err, for check, is the error that ended the check early (a base
	// image that cannot be resolved): returned after the warnings.
	err error
}

// parseCall reads --call (and --check, which is --call check).
func parseCall(s string, check bool) (callRequest, error) {
	if check {
		if s != "" && s != "build" && !strings.HasPrefix(s, "check") {
			return callRequest{}, usagef("--check is --call check: it cannot be combined with --call %s", s)
		}
		if s == "" || s == "build" {
			s = "check"
		}
	}
	name, opts, _ := strings.Cut(s, ",")
	r := callRequest{name: name}
	switch name {
	case "", "build":
		r.name = ""
	case "check", "lint", "outline", "targets":
		if name == "lint" {
			r.name = "check"
		}
	default:
		return callRequest{}, usagef("--call %s: use build, check, outline or targets", s)
	}
	if opts != "" {
		switch opts {
		case "format=json":
			r.json = true
		case "format=text":
		default:
			return callRequest{}, usagef("--call %s: the only option is format=json|text", s)
		}
	}
	return r, nil
}

// errCheckWarnings makes --check exit 1 when it found warnings, as
// `docker build --check` does.
var errCheckWarnings = errors.New("build checks found warnings (see above)")

// runCall answers a --call request on w without building anything, in
// buildx's formats. A check with warnings returns errCheckWarnings.
func runCall(w io.Writer, r callRequest, g *parser.Graph, o build.Options) error {
	switch r.name {
	case "check":
		if r.json {
			if err := printJSON(w, checkJSON(g, r.err)); err != nil {
				return err
			}
		} else if r.err == nil || len(g.Warnings) > 0 {
			printCheck(w, g)
		}
		if r.err != nil {
			return r.err
		}
		if len(g.Warnings) > 0 {
			return errCheckWarnings
		}
		return nil
	case "targets":
		ts := build.Targets(g)
		if r.json {
			return printJSON(w, map[string]any{"targets": ts})
		}
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprint(tw, "TARGET\tDESCRIPTION\n")
		for _, t := range ts {
			name := t.Name
			switch {
			case name == "" && t.Default:
				name = "(default)"
			case t.Default:
				name += " (default)"
			}
			fmt.Fprintf(tw, "%s\t%s\n", name, t.Description)
		}
		return tw.Flush()
	default: // outline
		ol, err := build.OutlineOf(g, o)
		if err != nil {
			return err
		}
		if r.json {
			return printJSON(w, ol)
		}
		printOutline(w, ol)
		return nil
	}
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// printOutline prints an outline as buildx prints BuildKit's.
func printOutline(w io.Writer, o *build.Outline) {
	if o.Name != "" || o.Description != "" {
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		name := o.Name
		if name == "" {
			name = "(default)"
		}
		fmt.Fprintf(tw, "TARGET:\t%s\n", name)
		if o.Description != "" {
			fmt.Fprintf(tw, "DESCRIPTION:\t%s\n", o.Description)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(o.Args) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		fmt.Fprint(tw, "BUILD ARG\tVALUE\tDESCRIPTION\n")
		for _, a := range o.Args {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Name, a.Value, a.Description)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	for _, sec := range []struct {
		title string
		list  []build.OutlineSecret
	}{{"SECRET", o.Secrets}, {"SSH", o.SSH}} {
		if len(sec.list) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		fmt.Fprintf(tw, "%s\tREQUIRED\n", sec.title)
		for _, s := range sec.list {
			req := ""
			if s.Required {
				req = "true"
			}
			fmt.Fprintf(tw, "%s\t%s\n", s.Name, req)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
}

// printCheck prints the build checks' result as `docker build --check`
// does: a count, then each warning with its rule, documentation address,
// message and the Dockerfile lines around it.
func printCheck(w io.Writer, g *parser.Graph) {
	switch n := len(g.Warnings); n {
	case 0:
		fmt.Fprintln(w, "Check complete, no warnings found.")
		return
	case 1:
		fmt.Fprintln(w, "Check complete, 1 warning has been found!")
	default:
		fmt.Fprintf(w, "Check complete, %d warnings have been found!\n", n)
	}
	lines := strings.Split(string(g.Source), "\n")
	for _, wn := range g.Warnings {
		fmt.Fprintf(w, "\nWARNING: %s", wn.Rule)
		if wn.URL != "" {
			fmt.Fprintf(w, " - %s", wn.URL)
		}
		fmt.Fprintf(w, "\n%s\n", wn.Message)
		printSnippet(w, wn.Pos, lines)
	}
}

// printSnippet prints the lines of pos with context, marked with ">>>", in
// BuildKit's source snippet format: two lines of context around a single
// line, one around a range.
func printSnippet(w io.Writer, pos parser.Pos, lines []string) {
	start, end := pos.Line, max(pos.EndLine, pos.Line)
	if start < 1 || start > len(lines) {
		return
	}
	end = min(end, len(lines))
	pad := 1
	if start == end {
		pad = 2
	}
	from, to := max(1, start-pad), min(len(lines), end+pad)
	fmt.Fprintf(w, "%s:%d\n--------------------\n", pos.File, start)
	for i := from; i <= to; i++ {
		mark := "   "
		if i >= start && i <= end {
			mark = ">>>"
		}
		fmt.Fprintf(w, " %3d | %s %s\n", i, mark, lines[i-1])
	}
	fmt.Fprint(w, "--------------------\n")
}

// checkJSON is the JSON of --call check,format=json: BuildKit's lint
// result shape, warnings with rule, message and lines, and the error that
// ended the check (buildError).
func checkJSON(g *parser.Graph, checkErr error) any {
	type position struct {
		Line int `json:"line"`
	}
	type rng struct {
		Start position `json:"start"`
		End   position `json:"end"`
	}
	type location struct {
		SourceIndex int   `json:"sourceIndex"`
		Ranges      []rng `json:"ranges"`
	}
	type warning struct {
		RuleName string   `json:"ruleName"`
		URL      string   `json:"url,omitempty"`
		Detail   string   `json:"detail,omitempty"`
		Location location `json:"location"`
	}
	type source struct {
		Filename string `json:"filename"`
		Data     []byte `json:"data"`
	}
	type buildError struct {
		Message  string   `json:"message"`
		Location location `json:"location"`
	}
	out := struct {
		Warnings   []warning   `json:"warnings"`
		Sources    []source    `json:"sources"`
		BuildError *buildError `json:"buildError,omitempty"`
	}{Warnings: []warning{}, Sources: []source{{Filename: g.File, Data: g.Source}}}
	if checkErr != nil {
		out.BuildError = &buildError{Message: checkErr.Error()}
		var pe *parser.Error
		if errors.As(checkErr, &pe) {
			out.BuildError.Location.Ranges = []rng{{Start: position{pe.Pos.Line}, End: position{max(pe.Pos.EndLine, pe.Pos.Line)}}}
		}
	}
	for _, wn := range g.Warnings {
		out.Warnings = append(out.Warnings, warning{RuleName: wn.Rule, URL: wn.URL, Detail: wn.Message,
			Location: location{Ranges: []rng{{Start: position{wn.Pos.Line}, End: position{max(wn.Pos.EndLine, wn.Pos.Line)}}}}})
	}
	return out
}

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
	"unicode"

	"builder/build"
	"builder/build/progress"
	"builder/build/record"
	"builder/imageref"
)

// buildsCommands are the subcommands of builder builds, in help order.
var buildsCommands = []struct {
	name string
	run  func(context.Context, *globals, []string) error
}{
	{"ls", runBuildsLs}, {"inspect", runBuildsInspect}, {"logs", runBuildsLogs},
	{"rm", runBuildsRm}, {"prune", runBuildsPrune}, {"export", runBuildsExport},
}

func runBuilds(ctx context.Context, g *globals, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, "Usage: builder builds COMMAND\n\nThe records of past builds (see docs/records.md):\n"+
			"  ls                 list them, newest first\n  inspect ID...      show records as JSON\n"+
			"  logs ID            replay a build's plain progress\n  rm ID...           remove records\n"+
			"  prune              remove records beyond the limits\n  export ID -o FILE  write a Chrome trace\n"+
			"\nIDs may be shortened to any unique prefix. --no-record or BUILDER_NO_RECORD=1 on a build\n"+
			"keeps none; BUILDER_RECORDS_KEEP and BUILDER_RECORDS_KEEP_STORAGE bound what GC keeps.\n"+
			"\nExamples:\n  builder builds ls\n  builder builds logs 3f2a --step 4\n  builder builds export 3f2a -o trace.json\n")
		if len(args) == 0 {
			return usagef("builder builds needs a command")
		}
		for _, c := range buildsCommands {
			fmt.Fprintln(os.Stderr)
			if err := c.run(ctx, g, []string{"--help"}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range buildsCommands {
		if c.name == args[0] {
			return c.run(ctx, g, args[1:])
		}
	}
	return usagef("unknown command \"builds %s\" (see 'builder builds --help')", args[0])
}

// buildRow is a record as builds ls shows it and --format sees it.
type buildRow struct {
	ID       string
	Name     string // the first tag, or the context
	State    string
	Started  string // "3 minutes ago"
	Start    time.Time
	Duration string
	Steps    int
	Cached   int
	Image    string
	Error    string
}

func runBuildsLs(_ context.Context, g *globals, args []string) error {
	fs := newFlagSet("builds ls", g)
	format := fs.String("format", "", "print each record through a Go template ('{{.ID}} {{.State}}'), or json for one JSON object a line")
	quiet := fs.BoolP("quiet", "q", false, "print only the build IDs")
	noTrunc := fs.Bool("no-trunc", false, "print full build IDs")
	if help, err := parseCommand(fs, "builder builds ls [OPTIONS]\n\nList the records of past builds, newest first.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder builds ls takes no arguments")
	}
	recs, err := record.List(g.root, true)
	if err != nil {
		return err
	}
	now := time.Now()
	w := os.Stdout
	switch {
	case *quiet:
		for _, r := range recs {
			fmt.Fprintln(w, shortBuildID(r.ID, *noTrunc))
		}
		return nil
	case *format == "json":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range recs {
			if err := enc.Encode(newBuildRow(r, true, now)); err != nil {
				return err
			}
		}
		return nil
	case *format != "":
		t, err := buildsTemplate(*format)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := printTemplate(w, t, newBuildRow(r, *noTrunc, now)); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "BUILD ID\tNAME\tSTATUS\tSTARTED\tDURATION\tSTEPS")
	for _, r := range recs {
		row := newBuildRow(r, *noTrunc, now)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d (%d cached)\n", row.ID, row.Name, row.State, row.Started, row.Duration, row.Steps, row.Cached)
	}
	return tw.Flush()
}

func newBuildRow(r *record.Record, noTrunc bool, now time.Time) buildRow {
	name := r.ContextSource
	if len(r.Tags) > 0 {
		name = r.Tags[0]
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		name = strconv.Quote(name) // a context path or URL must not drive the terminal
	}
	return buildRow{ID: shortBuildID(r.ID, noTrunc), Name: name, State: r.State, Started: age(now.Sub(r.Start)), Start: r.Start,
		Duration: fmt.Sprintf("%.1fs", r.Duration().Seconds()), Steps: len(r.Steps), Cached: r.Cached(), Image: r.Image, Error: r.Error}
}

// buildsTemplate parses a --format Go template; json is among its functions.
func buildsTemplate(format string) (*template.Template, error) {
	t, err := template.New("format").Funcs(template.FuncMap{"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	}}).Parse(format)
	if err != nil {
		return nil, usagef("--format: %w", err)
	}
	return t, nil
}

// printTemplate prints v through t as one line.
func printTemplate(w io.Writer, t *template.Template, v any) error {
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		return fmt.Errorf("format: %w", err)
	}
	_, err := fmt.Fprintln(w, strings.TrimSuffix(b.String(), "\n"))
	return err
}

// shortBuildID is the first 12 digits of a build ID, as ls shows it.
func shortBuildID(id string, full bool) string {
	if full || len(id) <= 12 {
		return id
	}
	return id[:12]
}

// loadRecords resolves the IDs or prefixes in args and reads their records.
func loadRecords(root string, args []string) ([]*record.Record, error) {
	var out []*record.Record
	for _, a := range args {
		id, err := record.Resolve(root, a)
		if err != nil {
			return nil, err
		}
		r, err := record.Load(root, id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func runBuildsInspect(_ context.Context, g *globals, args []string) error {
	fs := newFlagSet("builds inspect", g)
	format := fs.StringP("format", "f", "", "print each record through a Go template ('{{.State}} {{len .Steps}}') instead of JSON")
	if help, err := parseCommand(fs, "builder builds inspect [OPTIONS] ID...\n\nShow build records as a JSON array: the command line, inputs, steps and result.", args); help || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("builder builds inspect needs a build ID")
	}
	recs, err := loadRecords(g.root, fs.Args())
	if err != nil {
		return err
	}
	if *format != "" && *format != "json" {
		t, err := buildsTemplate(*format)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := printTemplate(os.Stdout, t, r); err != nil {
				return err
			}
		}
		return nil
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false)
	return enc.Encode(recs)
}

func runBuildsLogs(_ context.Context, g *globals, args []string) error {
	fs := newFlagSet("builds logs", g)
	step := fs.Int("step", 0, "print only step N (the #N of the progress)")
	if help, err := parseCommand(fs, "builder builds logs [OPTIONS] ID\n\nReplay a build's progress in the plain format, with its complete output.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("builder builds logs needs one build ID")
	}
	id, err := record.Resolve(g.root, fs.Arg(0))
	if err != nil {
		return err
	}
	events, err := record.Events(g.root, id)
	if err != nil {
		return err
	}
	if *step != 0 {
		var sel []progress.Event
		for _, e := range events {
			if e.Step == *step && e.Kind != progress.KindMessage {
				sel = append(sel, e)
			}
		}
		if len(sel) == 0 {
			return fmt.Errorf("build %s has no step %d", shortBuildID(id, false), *step)
		}
		events = sel
	}
	return progress.Replay(os.Stdout, events)
}

func runBuildsRm(_ context.Context, g *globals, args []string) error {
	fs := newFlagSet("builds rm", g)
	if help, err := parseCommand(fs, "builder builds rm ID...\n\nRemove build records (not those of running builds).", args); help || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("builder builds rm needs a build ID")
	}
	var errs []error
	for _, a := range fs.Args() {
		id, err := record.Resolve(g.root, a)
		if err == nil {
			err = record.Remove(g.root, id)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(id)
	}
	return errors.Join(errs...)
}

func runBuildsPrune(_ context.Context, g *globals, args []string) error {
	fs := newFlagSet("builds prune", g)
	all := fs.BoolP("all", "a", false, "remove every record but those of running builds")
	keep := fs.Int("keep", 0, "keep at most N records (default: BUILDER_RECORDS_KEEP, else "+strconv.Itoa(record.DefaultCount)+")")
	keepStorage := fs.String("keep-storage", "", "keep at most SIZE of records (default: BUILDER_RECORDS_KEEP_STORAGE, else 64MiB)")
	if help, err := parseCommand(fs, "builder builds prune [OPTIONS]\n\nRemove the oldest build records beyond the limits; GC (prune, and after each build) applies them too.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder builds prune takes no arguments")
	}
	l, err := recordLimits()
	if err != nil {
		return err
	}
	if *keep < 0 {
		return usagef("--keep must not be negative")
	}
	if *keep > 0 {
		l.Count = *keep
	}
	if *keepStorage != "" {
		if l.Bytes, err = parseSize(*keepStorage); err != nil || l.Bytes <= 0 {
			return usagef("--keep-storage %q: give a positive size like 16MiB", *keepStorage)
		}
	}
	c, err := record.Collect(g.root, l, *all)
	if err != nil {
		return err
	}
	fmt.Printf("removed %d build records, %s\n", c.Records, humanSize(c.Bytes))
	return nil
}

func runBuildsExport(_ context.Context, g *globals, args []string) error {
	fs := newFlagSet("builds export", g)
	out := fs.StringP("output", "o", "", "write the trace to FILE (- for stdout)")
	if help, err := parseCommand(fs, "builder builds export ID -o FILE\n\nWrite a build as a Chrome trace (Trace Event Format) for chrome://tracing or Perfetto:\none track per stage, one slice per step.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 1 || *out == "" {
		return usagef("builder builds export needs one build ID and -o FILE")
	}
	recs, err := loadRecords(g.root, fs.Args())
	if err != nil {
		return err
	}
	if *out == "-" {
		return recs[0].Trace(os.Stdout)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := recs[0].Trace(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// recordLimits reads the record limits from BUILDER_RECORDS_KEEP (a count)
// and BUILDER_RECORDS_KEEP_STORAGE (a size); unset means the defaults.
func recordLimits() (record.Limits, error) {
	var l record.Limits
	if v := os.Getenv("BUILDER_RECORDS_KEEP"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return l, usagef("BUILDER_RECORDS_KEEP=%q: give a positive number of records", v)
		}
		l.Count = n
	}
	if v := os.Getenv("BUILDER_RECORDS_KEEP_STORAGE"); v != "" {
		n, err := parseSize(v)
		if err != nil || n <= 0 {
			return l, usagef("BUILDER_RECORDS_KEEP_STORAGE=%q: give a positive size like 64MiB", v)
		}
		l.Bytes = n
	}
	return l.WithDefaults(), nil
}

// recordOff reports whether BUILDER_NO_RECORD turns build records off.
func recordOff() bool {
	v, _ := strconv.ParseBool(os.Getenv("BUILDER_NO_RECORD"))
	return v
}

// startRecord begins the record of a build with args (its command line
// after "build"), watching o's progress. It returns nil, after a warning,
// when the record cannot be made: a record never fails a build.
func startRecord(b *build.Builder, root string, o *build.Options, args []string) *record.Writer {
	l, err := recordLimits()
	if err != nil {
		o.Progress.Printf("WARNING: build record: %v", err)
		return nil
	}
	rec := record.Record{Command: append([]string{"builder", "build"}, redactArgs(args, b.Redact)...),
		ContextSource: redactURL(o.ContextDir)}
	for _, t := range o.Tags {
		if n, err := imageref.Normalize(t); err == nil {
			t = n
		}
		rec.Tags = append(rec.Tags, t)
	}
	w, err := record.Start(root, rec, l)
	if err != nil {
		o.Progress.Printf("WARNING: %v", err)
		return nil
	}
	o.Progress.AddObserver(w)
	return w
}

// redactArgs replaces the values of --build-arg KEY=VALUE with redact's
// hash and credentials in URLs with "xxxxx".
func redactArgs(args []string, redact func(string) string) []string {
	out := make([]string, len(args))
	next := false // args[i] is the value of a --build-arg before it
	for i, a := range args {
		switch {
		case next:
			out[i], next = redactBuildArg(a, redact), false
		case a == "--build-arg":
			out[i], next = a, true
		case strings.HasPrefix(a, "--build-arg="):
			out[i] = "--build-arg=" + redactBuildArg(strings.TrimPrefix(a, "--build-arg="), redact)
		default:
			out[i] = redactURL(a)
		}
	}
	return out
}

func redactBuildArg(kv string, redact func(string) string) string {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return kv // KEY alone takes the value from the environment: not on the command line
	}
	return k + "=<" + redact(v) + ">"
}

// redactURL hides the password of a URL with credentials (a Git or HTTP
// context); anything else is returned as it is.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil || u.Host == "" {
		return s
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	} else {
		u.User = url.User("xxxxx")
	}
	return u.String()
}

// fileDigest is the sha256 digest of a file, "" if it cannot be read.
func fileDigest(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// maxListed is how many entries contextDigest lists before giving up.
const maxListed = 200000

// contextDigest is the sha256 digest of a listing of the context dir:
// each entry's path, mode, size, modification time and link target, in
// walk order. It reads no file contents, so it is cheap; a context of more
// than maxListed entries gets none ("").
func contextDigest(dir string) string {
	h := sha256.New()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n > maxListed {
			return errors.New("context too large to list")
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var target string
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ = os.Readlink(p)
		}
		dt, _ := json.Marshal([]any{rel, uint32(fi.Mode()), fi.Size(), fi.ModTime().UnixNano(), target})
		h.Write(append(dt, '\n'))
		return nil
	})
	if err != nil {
		return ""
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

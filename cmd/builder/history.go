package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// historyRow is one step of `builder history`, and what --format sees.
// Size is in decimal units, as in `builder images`.
type historyRow struct {
	ID           string `json:"ID"` // the layer digest, or <none>
	CreatedAt    string `json:"CreatedAt"`
	CreatedSince string `json:"CreatedSince"`
	CreatedBy    string `json:"CreatedBy"`
	Size         string `json:"Size"`
	Comment      string `json:"Comment"`
}

func runHistory(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("history", g)
	noTrunc := fs.Bool("no-trunc", false, "do not cut long CREATED BY commands")
	quiet := fs.BoolP("quiet", "q", false, "print only layer digests")
	format := fs.String("format", "", "print each step through a Go template ('{{.ID}} {{.CreatedBy}}'), or json for one JSON object a line")
	usage := "builder history [OPTIONS] IMAGE\n\n" +
		"Show the steps that made a local image, newest first: the layer each made\n" +
		"(<none> for steps that only changed the config), when, the command, and the\n" +
		"layer's stored size (decimal: 1 kB = 1000 bytes).\n\n" +
		"Examples:\n" +
		"  builder history app\n" +
		"  builder history --no-trunc app:1.0\n" +
		"  builder history --format '{{.Size}}\\t{{.CreatedBy}}' app"
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("builder history needs exactly one IMAGE (see 'builder history --help')")
	}
	info, err := g.inspectStored(fs.Arg(0))
	if err != nil {
		return err
	}
	rows := historyRows(info, time.Now())
	switch {
	case *quiet:
		for _, r := range rows {
			fmt.Println(r.ID)
		}
		return nil
	case *format == "json":
		enc := json.NewEncoder(os.Stdout)
		enc.SetEscapeHTML(false)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	case *format != "":
		tmpl, err := parseTemplate(*format)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := executeLine(os.Stdout, tmpl, r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tCREATED\tCREATED BY\tSIZE\tCOMMENT")
	for _, r := range rows {
		by := strings.Join(strings.Fields(r.CreatedBy), " ")
		layer := r.ID
		if !*noTrunc {
			by = truncateRunes(by, 60)
			if strings.HasPrefix(layer, "sha256:") {
				layer = layer[len("sha256:") : len("sha256:")+12]
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", layer, r.CreatedSince, by, r.Size, r.Comment)
	}
	return tw.Flush()
}

// historyRows pairs an image's history entries with its layers, newest
// first; layers no history entry tells of (an image built without
// history) count as the newest.
func historyRows(info *imageInfo, now time.Time) []historyRow {
	var rows []historyRow
	li := 0
	for _, h := range info.History {
		r := historyRow{ID: "<none>", Size: "0B", CreatedBy: h.CreatedBy, Comment: h.Comment}
		if !h.Created.IsZero() {
			r.CreatedAt = h.Created.UTC().Format(time.RFC3339)
			r.CreatedSince = age(now.Sub(h.Created.Time))
		}
		if !h.EmptyLayer && li < len(info.Layers) {
			l := info.Layers[li]
			li++
			r.ID, r.Size = l.Digest, humanSize(l.Size)
		}
		rows = append(rows, r)
	}
	for ; li < len(info.Layers); li++ {
		l := info.Layers[li]
		rows = append(rows, historyRow{ID: l.Digest, Size: humanSize(l.Size)})
	}
	slices.Reverse(rows)
	return rows
}

func truncateRunes(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-3]) + "..."
}

// age says how long ago something happened, roughly, as "3 minutes ago".
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "in the future"
	case d < time.Minute:
		return "seconds ago"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d/time.Hour), "hour") + " ago"
	case d < 60*24*time.Hour:
		return plural(int(d/(24*time.Hour)), "day") + " ago"
	case d < 2*365*24*time.Hour:
		return plural(int(d/(30*24*time.Hour)), "month") + " ago"
	}
	return plural(int(d/(365*24*time.Hour)), "year") + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

func runHistory(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("history", g)
	noTrunc := fs.Bool("no-trunc", false, "do not cut long CREATED BY commands")
	quiet := fs.BoolP("quiet", "q", false, "print only layer digests")
	usage := "builder history [OPTIONS] IMAGE\n\n" +
		"Show the steps that made a local image, newest first: the layer each made\n" +
		"(<none> for steps that only changed the config), when, the command, and the\n" +
		"layer's stored size.\n\n" +
		"Examples:\n" +
		"  builder history app\n" +
		"  builder history --no-trunc app:1.0"
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
	type row struct{ layer, created, by, size, comment string }
	var rows []row
	li := 0
	for _, h := range info.History {
		r := row{layer: "<none>", size: "0B", by: h.CreatedBy, comment: h.Comment}
		if !h.Created.IsZero() {
			r.created = age(time.Since(h.Created.Time))
		}
		if !h.EmptyLayer && li < len(info.Layers) {
			l := info.Layers[li]
			li++
			r.layer, r.size = l.Digest, humanSize(l.Size)
		}
		rows = append(rows, r)
	}
	// Layers no history entry tells of (images built without history).
	for ; li < len(info.Layers); li++ {
		l := info.Layers[li]
		rows = append(rows, row{layer: l.Digest, size: humanSize(l.Size)})
	}
	if *quiet {
		for i := len(rows) - 1; i >= 0; i-- {
			fmt.Println(rows[i].layer)
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tCREATED\tCREATED BY\tSIZE\tCOMMENT")
	for i := len(rows) - 1; i >= 0; i-- {
		r := rows[i]
		by := strings.Join(strings.Fields(r.by), " ")
		layer := r.layer
		if !*noTrunc {
			by = truncateRunes(by, 60)
			if strings.HasPrefix(layer, "sha256:") {
				layer = layer[len("sha256:") : len("sha256:")+12]
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", layer, r.created, by, r.size, r.comment)
	}
	return tw.Flush()
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

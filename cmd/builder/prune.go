package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"builder/build/store"
)

func runPrune(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("prune", g)
	var (
		all     bool
		keep    string
		filters []string
	)
	fs.BoolVarP(&all, "all", "a", false, "remove all build cache (cache records and cache mounts), not only unreferenced data")
	fs.StringVar(&keep, "keep-storage", "", "then remove least recently used cache until the store is at most SIZE (e.g. 10GB, 512MiB)")
	fs.BoolP("force", "f", false, "do not ask for confirmation (prune never asks; accepted as docker's is)")
	fs.StringArrayVar(&filters, "filter", nil, "until=DURATION: remove cache unused for longer than DURATION (e.g. 24h)")
	if help, err := parseCommand(fs, "builder prune [OPTIONS]\n\nRemove unreferenced blobs and snapshots, leftovers of killed builds, and build cache\nas the options ask. Tagged images are kept.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder prune takes no arguments")
	}
	o := store.PruneOptions{All: all}
	if keep != "" {
		n, err := parseSize(keep)
		if err != nil {
			return usagef("--keep-storage: %w", err)
		}
		o.KeepStorage = n
	}
	for _, f := range filters {
		k, v, _ := strings.Cut(f, "=")
		if k != "until" {
			return usagef("--filter %q: only until=DURATION is supported", f)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return usagef("--filter %q: DURATION must be positive, like 30m or 24h", f)
		}
		o.Until = d
	}
	b, err := g.open(nil)
	if err != nil {
		return err
	}
	rep, err := b.Maintenance().Prune(ctx, o)
	if err != nil {
		return err
	}
	printPrune(rep)
	return nil
}

func printPrune(rep store.PruneReport) {
	fmt.Printf("removed %d cache records, %d blobs, %d snapshots, %d cache mounts\n", rep.Records, rep.Blobs, rep.Snapshots, rep.CacheMounts)
	fmt.Printf("Total reclaimed space: %s\n", humanSize(rep.Reclaimed))
}

// parseSize reads "1.5GB", "512MiB", "100k" or a plain number of bytes.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	units := []struct {
		suffix string
		mult   float64
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
		{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12}, {"b", 1},
	}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return int64(f * mult), nil
}

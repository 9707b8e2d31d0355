package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
)

func runDu(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("du", g)
	if help, err := parseCommand(fs, "builder du\n\nShow what uses space in the store.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder du takes no arguments")
	}
	b, err := g.open(nil)
	if err != nil {
		return err
	}
	u, err := b.Maintenance().DiskUsage(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tCOUNT\tSIZE")
	fmt.Fprintf(tw, "Image blobs\t%d images\t%s\n", u.Images, humanSize(u.ImageBlobs))
	fmt.Fprintf(tw, "Build cache blobs\t%d records\t%s\n", u.Records, humanSize(u.CacheBlobs))
	fmt.Fprintf(tw, "Unreferenced blobs\t-\t%s\n", humanSize(u.UnreferencedBlobs))
	fmt.Fprintf(tw, "Snapshots\t%d\t%s\n", u.Snaps, humanSize(u.Snapshots))
	fmt.Fprintf(tw, "Cache mounts\t%d\t%s\n", u.Mounts, humanSize(u.CacheMounts))
	fmt.Fprintf(tw, "Total\t%d blobs\t%s\n", u.Blobs, humanSize(u.Total()))
	return tw.Flush()
}

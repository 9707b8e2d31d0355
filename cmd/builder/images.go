package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"

	"builder/export"
)

// version is set at link time by the Makefile.
var version = "dev"

func runVersion(ctx context.Context, g *globals, args []string) error {
	fmt.Printf("builder %s %s/%s\n", version, runtime.GOOS, runtime.GOARCH)
	return nil
}

func runImages(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("images", g)
	quiet := fs.BoolP("quiet", "q", false, "print only image names")
	if help, err := parseCommand(fs, "builder images [OPTIONS]\n\nList the images in the local store with their digests and sizes.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder images takes no arguments")
	}
	idx, err := export.OpenIndex(g.root)
	if err != nil {
		return err
	}
	entries, err := idx.List()
	if err != nil {
		return err
	}
	if *quiet {
		for _, e := range entries {
			fmt.Println(e.Name)
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE\tPLATFORM")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, e.Digest, humanSize(e.Size), strings.Join(e.Platforms, ","))
	}
	return tw.Flush()
}

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

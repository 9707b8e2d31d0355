package main

import (
	"context"
	"fmt"
)

func runRmi(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("rmi", g)
	if help, err := parseCommand(fs, "builder rmi NAME [NAME...]\n\nUntag images and remove the blobs and snapshots nothing else uses.", args); help || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("builder rmi needs at least one image NAME")
	}
	b, err := g.open(nil)
	if err != nil {
		return err
	}
	for _, name := range fs.Args() {
		rep, err := b.Maintenance().RemoveImage(ctx, name)
		if err != nil {
			return err
		}
		fmt.Printf("Untagged: %s\n", name)
		printPrune(rep)
	}
	return nil
}

package main

import (
	"context"
	"fmt"
	"strings"
)

func runRmi(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("rmi", g)
	force := fs.BoolP("force", "f", false, "remove an image given by ID even if several names point at it (all are untagged)")
	usage := "builder rmi [OPTIONS] IMAGE [IMAGE...]\n\n" +
		"Untag images and remove the blobs and snapshots nothing else uses. IMAGE is a\n" +
		"name, which alone is untagged, or an image ID, whose names are all untagged."
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("builder rmi needs at least one IMAGE")
	}
	b, err := g.open(nil)
	if err != nil {
		return err
	}
	for _, ref := range fs.Args() {
		r, err := resolveImage(b.Index(), ref)
		if err != nil {
			return err
		}
		names := []string{ref}
		if r.ByID {
			if len(r.Names) > 1 && !*force {
				return fmt.Errorf("image %s has %d names (%s): name one, or remove them all with -f", ref, len(r.Names), strings.Join(r.Names, ", "))
			}
			names = r.Names
		}
		rep, err := b.Maintenance().RemoveNames(ctx, names)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Printf("Untagged: %s\n", n)
		}
		printPrune(rep)
	}
	return nil
}

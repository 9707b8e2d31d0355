package main

import (
	"context"

	"builder/imageref"
)

func runTag(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("tag", g)
	usage := "builder tag SOURCE TARGET [TARGET...]\n\n" +
		"Give a local image more names. SOURCE is a name, NAME@DIGEST or image ID of an\n" +
		"image in the store; each TARGET is a new name:tag. Tagging a name that exists moves it.\n\n" +
		"Examples:\n" +
		"  builder tag app registry.example.com/team/app:1.0\n" +
		"  builder tag app:latest app:stable app:2026-01"
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return usagef("builder tag needs a SOURCE and at least one TARGET (see 'builder tag --help')")
	}
	_, idx, err := g.openStore()
	if err != nil {
		return err
	}
	r, err := resolveImage(idx, fs.Arg(0))
	if err != nil {
		return err
	}
	desc := r.Desc
	desc.Annotations = nil
	for _, dst := range fs.Args()[1:] {
		if _, err := imageref.Normalize(dst); err != nil {
			return usagef("target %q: %w", dst, err)
		}
		if err := idx.Tag(dst, desc); err != nil {
			return err
		}
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
)

// errCheckFailed makes `builder check` exit 1 after printing its findings.
var errCheckFailed = errors.New("the store has problems")

func runCheck(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("check", g)
	var repair bool
	fs.BoolVar(&repair, "repair", false, "remove corrupt blobs, drop the cache records whose layers are gone (their steps run again) and fetch pulled images' missing blobs again; then report what is still wrong")
	if help, err := parseCommand(fs, "builder check [--repair]\n\nVerify every blob's digest, every cache record and every tagged image in the store.\nExit status 1 if anything is wrong (after --repair: if anything is still wrong).", args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder check takes no arguments")
	}
	b, err := g.open(nil)
	if err != nil {
		return err
	}
	if repair {
		rep, err := b.Maintenance().Repair(ctx, b.Refetch)
		if err != nil {
			return err
		}
		for _, d := range rep.Removed {
			fmt.Printf("removed corrupt blob %s\n", d)
		}
		for _, k := range rep.Invalidated {
			fmt.Printf("dropped cache record %s: its step runs again\n", k)
		}
		for _, n := range rep.Fetched {
			fmt.Printf("fetched %s again\n", n)
		}
		for _, p := range rep.Unrepaired {
			fmt.Printf("not repaired: %s\n", p)
		}
		if n := len(rep.Unrepaired); n > 0 {
			return fmt.Errorf("%w: %d not repaired", errCheckFailed, n)
		}
		fmt.Println("store is consistent")
		return nil
	}
	probs, err := b.Maintenance().Check(ctx)
	if err != nil {
		return err
	}
	for _, p := range probs {
		fmt.Println(p.String())
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %d found; `builder check --repair` repairs what it can", errCheckFailed, len(probs))
	}
	fmt.Println("store is consistent")
	return nil
}

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
	if help, err := parseCommand(fs, "builder check\n\nVerify every blob's digest, every cache record and every tagged image in the store.\nExit status 1 if anything is wrong.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder check takes no arguments")
	}
	b, err := g.open(nil)
	if err != nil {
		return err
	}
	probs, err := b.Maintenance().Check(ctx)
	if err != nil {
		return err
	}
	for _, p := range probs {
		fmt.Println(p.String())
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %d found", errCheckFailed, len(probs))
	}
	fmt.Println("store is consistent")
	return nil
}

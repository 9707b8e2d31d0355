package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"builder/build/binfmt"
)

// binfmtConfDir is where Debian's qemu-user-static installs its handlers.
const binfmtConfDir = "/usr/lib/binfmt.d"

func runEmulators(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("emulators", g)
	install := fs.Bool("install", false, "as root: mount binfmt_misc if needed and register the QEMU handlers of Debian's "+binfmt.Package+" with the F flag")
	usage := "builder emulators [--install]\n\n" +
		"List the platforms whose RUN steps this machine can run: its own natively, others\n" +
		"under QEMU user emulation through binfmt_misc handlers with the F flag."
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder emulators takes no arguments (see 'builder emulators --help')")
	}
	dir := os.Getenv("BUILDER_BINFMT_MISC")
	if dir == "" {
		dir = binfmt.Dir
	}
	if *install {
		if err := installEmulators(dir); err != nil {
			return err
		}
	}
	hs, err := binfmt.Read(dir)
	if err != nil {
		return err
	}
	fmt.Printf("linux/%s\tnative\n", runtime.GOARCH)
	found := binfmt.Platforms(hs)
	for _, p := range binfmt.SortedNames(found) {
		h := found[p]
		fmt.Printf("%s\t%s\t%s\tflags %s\n", p, h.Name, h.Interpreter, h.Flags)
	}
	if len(found) == 0 {
		fmt.Fprintf(os.Stderr, "no emulators: install Debian's %s and run 'builder emulators --install' as root\n", binfmt.Package)
	}
	return nil
}

// installEmulators mounts binfmt_misc on dir if needed and registers the
// handlers of qemu-user-static that dir lacks.
func installEmulators(dir string) error {
	if os.Geteuid() != 0 {
		return errors.New("builder emulators --install must run as root")
	}
	rules, err := binfmt.ReadRules(binfmtConfDir)
	if err != nil {
		return err
	}
	if len(rules) == 0 {
		return fmt.Errorf("no QEMU handlers in %s: install Debian's %s", binfmtConfDir, binfmt.Package)
	}
	if err := binfmt.Mount(dir); err != nil {
		return err
	}
	done, err := binfmt.Register(dir, rules)
	for _, n := range done {
		fmt.Fprintf(os.Stderr, "registered %s\n", n)
	}
	return err
}

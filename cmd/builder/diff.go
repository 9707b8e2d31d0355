package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build"
	"builder/export"
	"builder/export/imagediff"
	"builder/snapshot/content"
)

// errImagesDiffer makes `builder diff` exit 1 when the images differ.
var errImagesDiffer = errors.New("images differ")

func runDiff(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("diff", g)
	var insecure []string
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	platforms := fs.String("platform", "", "platforms to compare out of multi-platform images, comma-separated (default linux/"+hostArch()+"); each is compared on its own")
	if help, err := parseCommand(fs, "builder diff [OPTIONS] IMAGE_A IMAGE_B\n\n"+
		"Explain how two images differ: config fields, then layer by layer, file by file.\n"+
		"IMAGE is a local store name, oci-archive:FILE, docker-archive:FILE, FILE.tar, oci:DIR,\n"+
		"or a registry reference (docker://REF forces the registry).\n"+
		"Exit status: 0 identical, 1 different.", args); help || err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("builder diff needs two images (see 'builder diff --help')")
	}
	rc, err := g.registryClient(insecure)
	if err != nil {
		return err
	}
	o := imagediff.OpenOptions{Remote: rc}
	if st, err := os.Stat(g.root); err == nil && st.IsDir() {
		s, err := content.Open(g.root)
		if err != nil {
			return err
		}
		idx, err := export.OpenIndex(g.root)
		if err != nil {
			return err
		}
		o.Store, o.Index = s, idx
	}
	ps := []v1.Platform{{OS: "linux", Architecture: hostArch()}}
	if *platforms != "" {
		if ps, err = build.ParsePlatforms(*platforms); err != nil {
			return usagef("--platform: %w", err)
		}
	}
	identical := true
	for _, p := range ps {
		if len(ps) > 1 {
			fmt.Printf("== %s\n", export.PlatformString(p))
		}
		o.Platform = &p
		same, err := diffPlatform(ctx, fs.Arg(0), fs.Arg(1), o)
		if err != nil {
			return err
		}
		identical = identical && same
	}
	if !identical {
		return errImagesDiffer
	}
	return nil
}

// diffPlatform writes how images a and b differ for the platform o
// names and reports whether they are identical.
func diffPlatform(ctx context.Context, refA, refB string, o imagediff.OpenOptions) (bool, error) {
	a, err := imagediff.Open(ctx, refA, o)
	if err != nil {
		return false, err
	}
	defer a.Close()
	b, err := imagediff.Open(ctx, refB, o)
	if err != nil {
		return false, err
	}
	defer b.Close()
	rep, err := imagediff.Compare(ctx, a.Image, b.Image)
	if err != nil {
		return false, fmt.Errorf("compare %s and %s: %w", a.Name, b.Name, err)
	}
	if err := rep.Write(os.Stdout); err != nil {
		return false, err
	}
	return rep.Identical(), nil
}

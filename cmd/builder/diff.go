package main

import (
	"context"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build"
	"builder/build/registry"
	"builder/export"
	"builder/export/imagediff"
	"builder/snapshot/content"
)

// runDiff exits 0 when the images are the same, 1 when they differ (the
// report says how) and 2 on any error, as cmp and diff do.
func runDiff(ctx context.Context, g *globals, args []string) error {
	differ, err := diffImages(ctx, g, args)
	switch {
	case err != nil:
		return &exitStatus{code: 2, err: err}
	case differ:
		return &exitStatus{code: 1}
	}
	return nil
}

// diffImages compares the two images args name and writes the report; it
// returns whether they differ.
func diffImages(ctx context.Context, g *globals, args []string) (bool, error) {
	fs := newFlagSet("diff", g)
	var insecure []string
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	platforms := fs.String("platform", "", "platforms to compare out of multi-platform images, comma-separated (default linux/"+hostArch()+"); each is compared on its own")
	attestations := fs.Bool("attestations", false, "compare the images' attestations too (provenance, SBOMs: the predicates of their in-toto statements)")
	if help, err := parseCommand(fs, "builder diff [OPTIONS] IMAGE_A IMAGE_B\n\n"+
		"Explain how two images differ: config fields, then layer by layer, file by file.\n"+
		"IMAGE is a local store name or image ID, oci-archive:FILE, docker-archive:FILE,\n"+
		"FILE.tar, oci:DIR, or docker://REF for a registry (a name the store lacks is an\n"+
		"error, never looked up in a registry).\n"+
		"Attestations are ignored unless --attestations asks: then the statements attached\n"+
		"to each image (in its index, as referrers, or kept next to it in the store) are\n"+
		"compared too, predicate by predicate.\n"+
		"Exit status: 0 identical, 1 different, 2 error.", args); help || err != nil {
		return false, err
	}
	if fs.NArg() != 2 {
		return false, usagef("builder diff needs two images (see 'builder diff --help')")
	}
	rc, err := g.registryClient(insecure)
	if err != nil {
		return false, err
	}
	o := imagediff.OpenOptions{Remote: rc}
	if st, err := os.Stat(g.root); err == nil && st.IsDir() {
		s, err := content.Open(g.root)
		if err != nil {
			return false, err
		}
		idx, err := export.OpenIndex(g.root)
		if err != nil {
			return false, err
		}
		o.Store, o.Index = s, idx
	}
	ps := []v1.Platform{{OS: "linux", Architecture: hostArch()}}
	if *platforms != "" {
		if ps, err = build.ParsePlatforms(*platforms); err != nil {
			return false, usagef("--platform: %w", err)
		}
	}
	identical := true
	for _, p := range ps {
		if len(ps) > 1 {
			fmt.Printf("== %s\n", export.PlatformString(p))
		}
		o.Platform = &p
		same, err := diffPlatform(ctx, fs.Arg(0), fs.Arg(1), o, *attestations)
		if err != nil {
			return false, err
		}
		identical = identical && same
	}
	return !identical, nil
}

// diffPlatform writes how images a and b differ for the platform o
// names and reports whether they are identical.
func diffPlatform(ctx context.Context, refA, refB string, o imagediff.OpenOptions, attestations bool) (bool, error) {
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
	if attestations {
		sa, err := a.Attestations(ctx)
		if err != nil {
			return false, err
		}
		sb, err := b.Attestations(ctx)
		if err != nil {
			return false, err
		}
		if err := rep.CompareAttestations(sa, sb); err != nil {
			return false, fmt.Errorf("compare the attestations of %s and %s: %w", a.Name, b.Name, err)
		}
	}
	if err := rep.Write(os.Stdout); err != nil {
		return false, err
	}
	return rep.Identical(), nil
}

// The registry client reads attestations for diff --attestations.
var _ imagediff.AttestationRemote = (*registry.Client)(nil)

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"builder/build/progress"
	"builder/build/pull"
	"builder/build/push"
	"builder/build/registry"
	"builder/export"
	"builder/export/output"
	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// openStore opens the content store and tag index at the --root.
func (g *globals) openStore() (*content.Store, *export.Index, error) {
	s, err := content.Open(g.root)
	if err != nil {
		return nil, nil, err
	}
	idx, err := export.OpenIndex(g.root)
	if err != nil {
		return nil, nil, err
	}
	return s, idx, nil
}

// lookupImage finds a local image by name; for a multi-platform image,
// the host platform's (else the first), as docker picks.
func lookupImage(s *content.Store, idx *export.Index, ref string) (v1.Image, error) {
	img, _, err := lookupImageIndex(s, idx, ref)
	return img, err
}

// lookupImageIndex finds a local image by name, and when the name is a
// multi-platform image also its index (else nil).
func lookupImageIndex(s *content.Store, idx *export.Index, ref string) (v1.Image, v1.ImageIndex, error) {
	desc, err := idx.Lookup(ref)
	if errors.Is(err, export.ErrNotFound) {
		return nil, nil, fmt.Errorf("image %s is not in the local store (see 'builder images')", ref)
	}
	if err != nil {
		return nil, nil, err
	}
	if !desc.MediaType.IsIndex() {
		img, err := export.LoadImage(s, desc.Digest)
		return img, nil, err
	}
	ix, err := export.LoadIndex(s, desc.Digest)
	if err != nil {
		return nil, nil, err
	}
	images, err := export.IndexImages(ix)
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if len(images) == 0 {
		return nil, nil, fmt.Errorf("image %s: its index lists no image", ref)
	}
	return images[export.HostImage(images)].Image, ix, nil
}

// commandProgress shows a pull's or push's progress on stderr: a live view
// of bytes and rates on a terminal, plain lines otherwise, nothing if quiet.
// Close it when the command ends.
func commandProgress(quiet bool) *progress.Progress {
	mode, _ := progress.ParseMode("auto", os.Stderr)
	if quiet {
		mode = progress.Quiet
	}
	return progress.New(os.Stderr, mode)
}

// meter shows each transfer a pull or push makes as a Transfer of p.
func meter(p *progress.Progress) registry.MeterFunc {
	return func(label string, size int64) registry.Meter { return p.Transfer(label, size) }
}

// registryConfig reads the registry configuration: the --registry-config
// file, else the one BUILDER_REGISTRY_CONFIG names (both must exist), else
// the default file if there is one.
func (g *globals) registryConfig() (*registry.Config, error) {
	if g.regConfig != "" {
		return registry.Load(g.regConfig)
	}
	return registry.LoadDefault()
}

// registryClient makes the one registry client of a command: the registry
// configuration, the command's --insecure-registry list, and the
// credentials of $DOCKER_CONFIG/config.json.
func (g *globals) registryClient(insecure []string) (*registry.Client, error) {
	cfg, err := g.registryConfig()
	if err != nil {
		return nil, err
	}
	return registry.New(registry.Options{Config: cfg, Insecure: insecure}), nil
}

func runPush(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("push", g)
	var insecure []string
	var quiet bool
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print no progress")
	if help, err := parseCommand(fs, "builder push [OPTIONS] NAME [REF]\n\nPushes the local image NAME to REF (default NAME).", args); help || err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usagef("builder push needs NAME and optionally REF (see 'builder push --help')")
	}
	s, idx, err := g.openStore()
	if err != nil {
		return err
	}
	img, ix, err := lookupImageIndex(s, idx, fs.Arg(0))
	if err != nil {
		return err
	}
	var what push.Artifact = img
	if ix != nil { // a multi-platform image goes whole
		what = ix
	}
	dest := fs.Arg(0)
	if fs.NArg() == 2 {
		dest = fs.Arg(1)
	}
	rc, err := g.registryClient(insecure)
	if err != nil {
		return err
	}
	prog := commandProgress(quiet)
	defer prog.Close()
	opts := push.Options{Progress: prog.Line, Meter: meter(prog)}
	res, err := push.Push(ctx, rc, what, []string{dest}, opts)
	if err != nil {
		return err
	}
	fmt.Println(res[0].Digest)
	return nil
}

func runPull(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("pull", g)
	var insecure []string
	var platform string
	var quiet bool
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	fs.StringVar(&platform, "platform", "linux/"+hostArch(), "platform to pull out of a multi-platform image")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print no progress")
	if help, err := parseCommand(fs, "builder pull [OPTIONS] REF", args); help || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("builder pull needs exactly one REF")
	}
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return usagef("--platform %q: %w", platform, err)
	}
	s, idx, err := g.openStore()
	if err != nil {
		return err
	}
	rc, err := g.registryClient(insecure)
	if err != nil {
		return err
	}
	prog := commandProgress(quiet)
	defer prog.Close()
	opts := pull.Options{Platform: *p, Progress: prog.Line, Meter: meter(prog)}
	ref := fs.Arg(0)
	d, err := pull.Pull(ctx, rc, s, ref, opts)
	if err != nil {
		return err
	}
	if !strings.Contains(ref, "@") {
		if err := idx.Tag(ref, v1.Descriptor{Digest: d}); err != nil {
			return err
		}
	}
	fmt.Println(d)
	return nil
}

func runSave(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("save", g)
	var out, format string
	fs.StringVarP(&out, "output", "o", "", "write to this file (default stdout, if it is not a terminal)")
	fs.StringVar(&format, "format", "docker", "archive format: docker (docker load) or oci (OCI image layout tar)")
	if help, err := parseCommand(fs, "builder save [OPTIONS] NAME...", args); help || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("builder save needs at least one NAME")
	}
	if format != "docker" && format != "oci" {
		return usagef("--format %q: use docker or oci", format)
	}
	if format == "oci" && fs.NArg() != 1 {
		return usagef("--format oci saves one image; name one")
	}
	if out == "" {
		out = "-"
	}
	s, idx, err := g.openStore()
	if err != nil {
		return err
	}
	// One archive entry per image, in the order first named, its tags in
	// the order given, so the same command writes the same bytes.
	var images []export.DockerImage
	byDigest := map[v1.Hash]int{}
	for _, n := range fs.Args() {
		img, err := lookupImage(s, idx, n)
		if err != nil {
			return err
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		i, ok := byDigest[d]
		if !ok {
			i = len(images)
			byDigest[d] = i
			images = append(images, export.DockerImage{Image: img})
		}
		images[i].Tags = append(images[i].Tags, n)
	}
	err = writeDest(out, func(w io.Writer) error {
		if format == "oci" {
			return export.WriteOCIArchive(ctx, w, images[0].Image, fs.Arg(0))
		}
		return export.WriteDockerArchiveImages(ctx, w, images)
	})
	if err != nil {
		return fmt.Errorf("save to %s: %w", output.DestName(out), err)
	}
	return nil
}

func runLoad(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("load", g)
	var in string
	var quiet bool
	fs.StringVarP(&in, "input", "i", "-", "read this docker or OCI archive (default stdin)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print nothing")
	if help, err := parseCommand(fs, "builder load [OPTIONS]", args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder load takes no arguments; give the archive with -i FILE")
	}
	s, idx, err := g.openStore()
	if err != nil {
		return err
	}
	if in == "-" {
		// The archive is read several times; spool stdin to a file.
		tmpDir := filepath.Join(g.root, "tmp")
		if err := os.MkdirAll(tmpDir, 0o700); err != nil {
			return err
		}
		f, err := os.CreateTemp(tmpDir, "load-*.tar")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		_, err = io.Copy(f, os.Stdin)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		in = f.Name()
	}
	loaded, err := export.LoadArchive(ctx, s, in)
	if err != nil {
		return err
	}
	for _, l := range loaded {
		for _, n := range l.Names {
			if err := idx.Tag(n, v1.Descriptor{Digest: l.Digest}); err != nil {
				return err
			}
			if !quiet {
				fmt.Printf("Loaded image: %s\n", n)
			}
		}
		if len(l.Names) == 0 && !quiet {
			fmt.Printf("Loaded image ID: %s\n", l.Digest)
		}
	}
	return nil
}

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

// resolveImage finds a local image by name or image ID.
func resolveImage(idx *export.Index, ref string) (export.Resolved, error) {
	r, err := idx.Resolve(ref)
	if errors.Is(err, export.ErrNotFound) {
		return r, fmt.Errorf("image %s is not in the local store (see 'builder images')", ref)
	}
	return r, err
}

// lookupImageIndex finds a local image by name or image ID; for a
// multi-platform image, the host platform's image (else the first), as
// docker picks, and its index (else nil).
func lookupImageIndex(s *content.Store, idx *export.Index, ref string) (export.Resolved, v1.Image, v1.ImageIndex, error) {
	r, err := resolveImage(idx, ref)
	if err != nil {
		return r, nil, nil, err
	}
	if !r.Desc.MediaType.IsIndex() {
		img, err := export.LoadImage(s, r.Desc.Digest)
		return r, img, nil, err
	}
	ix, err := export.LoadIndex(s, r.Desc.Digest)
	if err != nil {
		return r, nil, nil, err
	}
	images, err := export.IndexImages(ix)
	if err != nil {
		return r, nil, nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if len(images) == 0 {
		return r, nil, nil, fmt.Errorf("image %s: its index lists no image", ref)
	}
	return r, images[export.HostImage(images)].Image, ix, nil
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
	r, img, ix, err := lookupImageIndex(s, idx, fs.Arg(0))
	if err != nil {
		return err
	}
	var what push.Artifact = img
	if ix != nil { // a multi-platform image goes whole
		what = ix
	}
	dest := fs.Arg(0)
	switch {
	case fs.NArg() == 2:
		dest = fs.Arg(1)
	case r.ByID:
		return usagef("builder push %s: an image ID names no repository; give the REF to push to", fs.Arg(0))
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
	// The attestations the store keeps next to the image go along, as
	// their build stored them; with an index, dest now names it. Those of
	// a multi-platform image's index went with it; the store keeps its
	// images' referrers next to them.
	pc := output.Config{Store: s, Index: idx, Registry: rc, Progress: prog.Line, Meter: opts.Meter}
	if ix != nil {
		if err := output.PushStoredPlatforms(ctx, pc, ix, []string{dest}); err != nil {
			return err
		}
		fmt.Println(res[0].Digest)
		return nil
	}
	ai, err := output.PushStored(ctx, pc, img, []string{dest})
	if err != nil {
		return err
	}
	if ai != nil {
		d, err := ai.Digest()
		if err != nil {
			return err
		}
		fmt.Println(d)
		return nil
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
	fs.StringVar(&format, "format", "docker-archive", "archive format: docker-archive (docker load; also: docker) or oci-archive (an OCI image layout tar; also: oci)")
	usage := "builder save [OPTIONS] IMAGE...\n\n" +
		"Write local images (names or image IDs) to one archive. A docker archive lists\n" +
		"each image once with its names as RepoTags; an OCI archive has an index.json\n" +
		"entry per name, annotated with it (an image ID gives an entry without a name)."
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("builder save needs at least one IMAGE")
	}
	switch format {
	case "docker", "docker-archive":
		format = "docker"
	case "oci", "oci-archive":
		format = "oci"
	default:
		return usagef("--format %q: use docker-archive or oci-archive", format)
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
	var named []export.NamedImage
	byDigest := map[v1.Hash]int{}
	for _, n := range fs.Args() {
		r, err := resolveImage(idx, n)
		if err != nil {
			return err
		}
		img, err := export.LoadImage(s, r.Desc.Digest)
		if err != nil {
			return err
		}
		refName := n
		if r.ByID {
			refName = ""
		}
		named = append(named, export.NamedImage{Image: img, RefName: refName})
		i, ok := byDigest[r.Desc.Digest]
		if !ok {
			i = len(images)
			byDigest[r.Desc.Digest] = i
			images = append(images, export.DockerImage{Image: img})
		}
		if refName != "" {
			images[i].Tags = append(images[i].Tags, refName)
		}
	}
	err = writeDest(out, func(w io.Writer) error {
		if format == "oci" {
			return export.WriteOCIArchiveImages(ctx, w, named)
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

package output

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/attest"
	"builder/build/registry"
	"builder/export"
	"builder/internal/atomicfile"
	"builder/snapshot/content"
)

// ErrNoName is an output that needs an image name and has none: neither
// name= nor a -t tag. It is a mistake in the command line.
var ErrNoName = errors.New("needs name= or a -t tag")

// Spec is one output destination.
type Spec struct {
	Type    string   // image, registry, oci, docker, local or tar
	Dest    string   // file or directory; "-" is the Config's Stdout
	Names   []string // name=: image names; default the build's tags
	Push    bool     // push=true, or type=registry
	Tar     bool     // tar=false writes an OCI layout directory
	Convert export.ConvertOptions
}

// Result describes the image an output wrote, for --iidfile and
// --metadata-file.
type Result struct {
	Digest    v1.Hash // manifest digest
	Config    v1.Hash // config digest
	MediaType string  // manifest media type
	Size      int64   // manifest size
	Names     []string
	Image     v1.Image // the image written
	// BuildRef identifies the build, for buildx.build.ref in the
	// metadata file; empty leaves the key out.
	BuildRef string
}

// Config is what an Exporter writes with.
type Config struct {
	Store    *content.Store
	Index    *export.Index    // the local store's tags
	Registry *registry.Client // pushes; nil when no output pushes
	Scratch  string           // directory for temporary files (the store's tmp)
	// Stdout returns where a Dest of "-" writes, or an error that refuses
	// it (for example a terminal).
	Stdout func() (io.Writer, error)
	// Progress receives one-line messages, from one goroutine at a time.
	Progress func(string)
	// Meter counts push bytes; nil shows none.
	Meter registry.MeterFunc
	// Attest, if it has predicates, attaches attestations to every image
	// written to the store, an OCI archive or a registry (a docker
	// archive cannot carry them).
	Attest *Attestations
	// IndexAnnotations go on a multi-platform build's index (--annotation
	// index:), wherever it is written or pushed.
	IndexAnnotations map[string]string
	// DescriptorAnnotations go on the image's or index's entry in an OCI
	// layout's index.json (--annotation manifest-descriptor: for one
	// platform, index-descriptor: for several), as BuildKit's oci
	// exporter writes them; other outputs have no place for them.
	DescriptorAnnotations map[string]string
}

// Exporter writes one build's image to its outputs. Converted variants of
// the image are made once per set of conversion options. It is not safe
// for concurrent use.
type Exporter struct {
	c         Config
	converted map[export.ConvertOptions]v1.Image
}

// New returns an Exporter writing with c.
func New(c Config) *Exporter {
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
	if c.Stdout == nil {
		c.Stdout = func() (io.Writer, error) { return os.Stdout, nil }
	}
	return &Exporter{c: c, converted: map[export.ConvertOptions]v1.Image{}}
}

// Export writes img to every spec in order; names are the build's tags,
// which name the image where a spec has no name=. One build makes one
// image: the first spec that makes an image (image, registry, oci, docker)
// decides its compression and media types, and the local store's names
// are pointed at that image once every spec is written; Export returns it
// (img itself under names when no spec makes an image). Later specs that
// convert otherwise write their own variant.
func (e *Exporter) Export(ctx context.Context, specs []Spec, img v1.Image, names []string) (*Result, error) {
	var first *Result
	for _, s := range specs {
		r, err := e.write(ctx, s, img, names)
		if err != nil {
			return nil, err
		}
		if first == nil && r != nil {
			first = r
		}
	}
	if first == nil {
		return describe(img, names)
	}
	d, err := first.Image.Digest()
	if err != nil {
		return nil, err
	}
	if err := e.tagAll(d, names); err != nil {
		return nil, err
	}
	return first, nil
}

// image returns img converted as o says.
func (e *Exporter) image(ctx context.Context, img v1.Image, o export.ConvertOptions) (v1.Image, error) {
	if !o.Changes() {
		return img, nil
	}
	if c, ok := e.converted[o]; ok {
		return c, nil
	}
	_, c, err := export.Convert(ctx, e.c.Store, img, o)
	if err != nil {
		return nil, err
	}
	e.converted[o] = c
	return c, nil
}

// write writes img to one output; a root filesystem output returns a nil
// Result.
func (e *Exporter) write(ctx context.Context, s Spec, img v1.Image, tags []string) (*Result, error) {
	names := s.Names
	if len(names) == 0 {
		names = tags
	}
	switch s.Type {
	case "local":
		if err := export.UnpackRootfs(ctx, s.Dest, img); err != nil {
			return nil, fmt.Errorf("export local to %s: %w", s.Dest, err)
		}
		e.c.Progress(fmt.Sprintf("exported the root filesystem to %s", s.Dest))
		return nil, nil
	case "tar":
		err := e.writeScratchDest(s.Dest, func(w io.Writer) error {
			return export.WriteRootfsTar(ctx, w, img, e.c.Scratch)
		})
		if err != nil {
			return nil, fmt.Errorf("export tar to %s: %w", s.Dest, err)
		}
		e.c.Progress(fmt.Sprintf("exported the root filesystem as a tar to %s", DestName(s.Dest)))
		return nil, nil
	}
	img, err := e.image(ctx, img, s.Convert)
	if err != nil {
		return nil, err
	}
	var att *attest.Bundle
	var desc v1.Descriptor
	if (e.c.Attest.index() || e.c.Attest.referrers()) && s.Type != "docker" {
		if att, desc, err = e.bundle(img, names); err != nil {
			return nil, err
		}
	}
	a := imageArtifact(ctx, img, e.c.DescriptorAnnotations)
	if att != nil {
		a = e.attestedArtifact(ctx, a, img, desc, att)
	}
	if err := e.writeImage(s, a, names); err != nil {
		return nil, err
	}
	if s.Push {
		if err := e.push(ctx, img, names); err != nil {
			return nil, err
		}
		if att != nil {
			idx, err := e.pushAttestations(ctx, img, desc, att, names)
			if err != nil {
				return nil, err
			}
			if idx != nil {
				// The names now point at the index, as with BuildKit.
				return describeAttestedIndex(idx, img, names)
			}
		}
	}
	return describe(img, names)
}

// artifact is what an image output writes, an image or a multi-platform
// index, through the writers of its kind.
type artifact struct {
	ociWhat, dockerWhat string                                     // what the progress lines name
	store               func() (v1.Hash, error)                    // puts it in the store; the digest to tag
	ociDir              func(dir, refName string) error            // once per name
	ociTar              func(w io.Writer, refNames []string) error // every name in one index.json
	docker              func(w io.Writer, names []string) error
	// attach, if set, stores what goes with it in the store (its
	// attestations) once it is tagged.
	attach func() error
}

// imageArtifact writes img, which the store already holds; its entry in an
// OCI layout's index.json gets ann.
func imageArtifact(ctx context.Context, img v1.Image, ann map[string]string) artifact {
	return artifact{ociWhat: "image", dockerWhat: "image",
		store:  img.Digest,
		ociDir: func(dir, ref string) error { return export.WriteOCIDir(ctx, dir, img, ref, ann) },
		ociTar: func(w io.Writer, refs []string) error {
			images := make([]export.NamedImage, len(refs))
			for i, ref := range refs {
				images[i] = export.NamedImage{Image: img, RefName: ref, Annotations: ann}
			}
			return export.WriteOCIArchiveImages(ctx, w, images)
		},
		docker: func(w io.Writer, names []string) error { return export.WriteDockerArchive(ctx, w, img, names) },
	}
}

// writeImage tags a or writes it to an archive, as s.Type says; a
// registry output only checks that it has a name, as the push follows.
func (e *Exporter) writeImage(s Spec, a artifact, names []string) error {
	var err error
	switch s.Type {
	case "image":
		d, err := a.store()
		if err != nil {
			return err
		}
		if err := e.tagAll(d, names); err != nil || a.attach == nil {
			return err
		}
		return a.attach()
	case "registry":
		if len(names) == 0 {
			return fmt.Errorf("output type registry %w", ErrNoName)
		}
	case "oci":
		// BuildKit lists the image in index.json once per name
		// (moby/buildkit#5572).
		refNames := names
		if len(refNames) == 0 {
			refNames = []string{"latest"}
		}
		if !s.Tar {
			for _, n := range refNames {
				if err = a.ociDir(s.Dest, n); err != nil {
					break
				}
			}
		} else {
			err = e.writeDest(s.Dest, func(w io.Writer) error { return a.ociTar(w, refNames) })
		}
		if err != nil {
			return fmt.Errorf("export oci to %s: %w", s.Dest, err)
		}
		e.c.Progress(fmt.Sprintf("exported oci %s to %s", a.ociWhat, DestName(s.Dest)))
	case "docker":
		err = e.writeDest(s.Dest, func(w io.Writer) error { return a.docker(w, names) })
		if err != nil {
			return fmt.Errorf("export docker to %s: %w", s.Dest, err)
		}
		e.c.Progress(fmt.Sprintf("exported docker %s to %s", a.dockerWhat, DestName(s.Dest)))
	}
	return nil
}

// tagAll points names at the manifest or index d in the local store's
// index.
func (e *Exporter) tagAll(d v1.Hash, names []string) error {
	for _, n := range names {
		if err := e.c.Index.Tag(n, v1.Descriptor{Digest: d}); err != nil {
			return err
		}
	}
	return nil
}

// writeDest runs fn on the Config's Stdout for "-", else on a temporary
// file next to dest that is synced and renamed to dest (mode 0644) once fn
// succeeds.
func (e *Exporter) writeDest(dest string, fn func(io.Writer) error) error {
	if dest == "-" {
		w, err := e.c.Stdout()
		if err != nil {
			return err
		}
		return fn(w)
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return err
	}
	return atomicfile.Write(abs, 0o644, fn)
}

// writeScratchDest is writeDest for a writer that needs the scratch
// directory, which it creates.
func (e *Exporter) writeScratchDest(dest string, fn func(io.Writer) error) error {
	if err := os.MkdirAll(e.c.Scratch, 0o700); err != nil {
		return err
	}
	return e.writeDest(dest, fn)
}

// DestName names a destination for messages: "stdout" for "-".
func DestName(dest string) string {
	if dest == "-" {
		return "stdout"
	}
	return dest
}

// describe fills a Result from an image.
func describe(img v1.Image, names []string) (*Result, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	size, err := img.Size()
	if err != nil {
		return nil, err
	}
	return &Result{Digest: d, Config: cfg, MediaType: string(mt), Size: size, Names: names, Image: img}, nil
}

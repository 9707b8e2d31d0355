package output

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/attest"
	"builder/build/push"
	"builder/export"
)

// ExportPlatforms writes a multi-platform build's images to every spec in
// order, as Export writes one image: image, registry, oci and docker
// outputs get the index of the images (export.AssembleIndex; a Docker
// manifest list with oci-mediatypes=false), local and tar outputs one
// directory per platform (linux_amd64/...). It returns what the first
// spec that makes an image exported, else the index under names.
func (e *Exporter) ExportPlatforms(ctx context.Context, specs []Spec, images []export.PlatformImage, names []string) (*Result, error) {
	var first *Result
	for _, s := range specs {
		r, err := e.writePlatforms(ctx, s, images, names)
		if err != nil {
			return nil, err
		}
		if first == nil && r != nil {
			first = r
		}
	}
	if first == nil {
		idx, err := export.AssembleIndex(images, e.c.IndexAnnotations)
		if err != nil {
			return nil, err
		}
		return describeIndex(idx, names)
	}
	return first, nil
}

// writePlatforms writes images to one output.
func (e *Exporter) writePlatforms(ctx context.Context, s Spec, images []export.PlatformImage, tags []string) (*Result, error) {
	names := s.Names
	if len(names) == 0 {
		names = tags
	}
	switch s.Type {
	case "local":
		for _, pi := range images {
			dir := filepath.Join(s.Dest, export.PlatformDir(pi.Platform))
			if err := export.UnpackRootfs(ctx, dir, pi.Image); err != nil {
				return nil, fmt.Errorf("export local to %s: %w", dir, err)
			}
		}
		e.c.Progress(fmt.Sprintf("exported the root filesystems of %d platforms to %s", len(images), s.Dest))
		return nil, nil
	case "tar":
		err := e.writeScratchDest(s.Dest, func(w io.Writer) error {
			return export.WritePlatformsRootfsTar(ctx, w, images, e.c.Scratch)
		})
		if err != nil {
			return nil, fmt.Errorf("export tar to %s: %w", s.Dest, err)
		}
		e.c.Progress(fmt.Sprintf("exported the root filesystems of %d platforms as a tar to %s", len(images), DestName(s.Dest)))
		return nil, nil
	}
	conv := make([]export.PlatformImage, len(images))
	co := s.Convert
	if co.MediaTypes == export.MediaTypesDocker && e.annotated(images) {
		// A Docker manifest list has no annotations: BuildKit switches too.
		e.c.Progress("forcibly turning on oci-mediatype mode for annotations")
		co.MediaTypes = export.MediaTypesOCI
	}
	for i, pi := range images {
		img, err := e.image(ctx, pi.Image, co)
		if err != nil {
			return nil, err
		}
		conv[i] = export.PlatformImage{Platform: pi.Platform, Image: img, Annotations: pi.Annotations}
	}
	idx, err := export.AssembleIndex(conv, e.c.IndexAnnotations)
	if err != nil {
		return nil, err
	}
	var bundles []*attest.Bundle
	if e.c.Attest.any() && s.Type != "docker" {
		if bundles, err = e.platformBundles(conv, names); err != nil {
			return nil, err
		}
	}
	out := idx
	if len(bundles) > 0 && e.c.Attest.index() {
		if out, err = withPlatformAttestations(idx, bundles); err != nil {
			return nil, err
		}
	}
	a := indexArtifact(ctx, e.c, out, conv, e.c.DescriptorAnnotations)
	if len(bundles) > 0 {
		a = e.attestedIndexArtifact(ctx, a, idx, bundles)
	}
	if err := e.writeImage(s, a, names); err != nil {
		return nil, err
	}
	if s.Push {
		if err := e.push(ctx, out, names); err != nil {
			return nil, err
		}
		if len(bundles) > 0 && !e.c.Attest.index() {
			if err := e.pushReferrers(ctx, bundles, names); err != nil {
				return nil, err
			}
		}
	}
	return describeIndex(out, names)
}

// indexArtifact writes idx, whose images are images, storing it in c's
// store when tagged; its entry in an OCI layout's index.json gets ann.
func indexArtifact(ctx context.Context, c Config, idx v1.ImageIndex, images []export.PlatformImage, ann map[string]string) artifact {
	return artifact{ociWhat: "image index", dockerWhat: fmt.Sprintf("images of %d platforms", len(images)),
		store:  func() (v1.Hash, error) { return export.WriteIndex(ctx, c.Store, idx) },
		ociDir: func(dir, ref string) error { return export.WriteOCIIndexDir(ctx, dir, idx, ref, ann) },
		ociTar: func(w io.Writer, refs []string) error {
			return export.WriteOCIIndexArchive(ctx, w, idx, refs, false, ann)
		},
		docker: func(w io.Writer, names []string) error { return export.WriteDockerIndexArchive(ctx, w, images, names) },
	}
}

// annotated reports whether the index of images carries annotations.
func (e *Exporter) annotated(images []export.PlatformImage) bool {
	n := len(e.c.IndexAnnotations)
	for _, pi := range images {
		n += len(pi.Annotations)
	}
	return n > 0
}

// push sends an image or an index to names.
func (e *Exporter) push(ctx context.Context, a push.Artifact, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("push %w", ErrNoName)
	}
	if e.c.Registry == nil {
		return errors.New("push: no registry client")
	}
	_, err := push.Push(ctx, e.c.Registry, a, names, push.Options{Progress: e.c.Progress, Meter: e.c.Meter})
	return err
}

// describeIndex fills a Result from an index, which has no config.
func describeIndex(idx v1.ImageIndex, names []string) (*Result, error) {
	d, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	mt, err := idx.MediaType()
	if err != nil {
		return nil, err
	}
	size, err := idx.Size()
	if err != nil {
		return nil, err
	}
	return &Result{Digest: d, MediaType: string(mt), Size: size, Names: names}, nil
}

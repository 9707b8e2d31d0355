package build

import (
	"context"
	"fmt"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/binfmt"
	"builder/build/progress"
	"builder/export"
	"builder/parser"
)

// ParsePlatforms reads a --platform value: a comma-separated list of
// os/arch[/variant], each normalized as containerd's platforms package
// does (aarch64 is arm64, arm64/v8 is arm64, arm is arm/v7, x86_64 is
// amd64), each once.
func ParsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := parsePlatform(f)
		if err != nil {
			return nil, err
		}
		if k := export.PlatformString(p); !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no platform in %q", s)
	}
	if len(out) > MaxPlatforms {
		return nil, fmt.Errorf("%d platforms: at most %d can be built at once", len(out), MaxPlatforms)
	}
	return out, nil
}

// maxPlatformLen bounds one platform string; real ones are short.
const maxPlatformLen = 64

// MaxPlatforms bounds the platforms of one build, each of which is a
// build of its own running in parallel.
const MaxPlatforms = 16

func parsePlatform(s string) (v1.Platform, error) {
	if len(s) > maxPlatformLen {
		return v1.Platform{}, fmt.Errorf("platform %.20q... is longer than %d bytes", s, maxPlatformLen)
	}
	parts := strings.Split(strings.ToLower(s), "/")
	if len(parts) < 2 || len(parts) > 3 {
		return v1.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	for _, p := range parts {
		if p == "" || strings.ContainsFunc(p, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
		}) {
			return v1.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant] of letters and digits", s)
		}
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return NormalizePlatform(p), nil
}

// NormalizePlatform spells p as containerd's platforms.Normalize does.
func NormalizePlatform(p v1.Platform) v1.Platform {
	p.OS = strings.ToLower(p.OS)
	if p.OS == "macos" {
		p.OS = "darwin"
	}
	switch strings.ToLower(p.Architecture) {
	case "i386":
		p.Architecture, p.Variant = "386", ""
	case "x86_64", "x86-64", "amd64":
		p.Architecture = "amd64"
		if p.Variant == "v1" {
			p.Variant = ""
		}
	case "aarch64", "arm64":
		p.Architecture = "arm64"
		if p.Variant == "8" || p.Variant == "v8" || p.Variant == "v8.0" {
			p.Variant = ""
		}
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	case "arm":
		switch p.Variant {
		case "", "7":
			p.Variant = "v7"
		case "5", "6", "8":
			p.Variant = "v" + p.Variant
		}
	}
	return p
}

// emulators finds, once per build, which binfmt_misc handler runs each
// foreign platform.
type emulators struct {
	dir  string
	once sync.Once
	hs   []binfmt.Handler
	err  error
}

// find returns the handler that runs programs of p, or an error that
// says what to install.
func (e *emulators) find(p v1.Platform) (binfmt.Handler, error) {
	e.once.Do(func() {
		dir := e.dir
		if dir == "" {
			dir = binfmt.Dir
		}
		e.hs, e.err = binfmt.Read(dir)
	})
	if e.err != nil {
		return binfmt.Handler{}, e.err
	}
	return binfmt.Find(e.hs, p)
}

// stagePlatform is the platform stage i's steps run as, as far as it is
// known before running: its FROM --platform, the platform of the stage it
// is built on, or the target platform.
func (j *job) stagePlatform(i int) v1.Platform {
	for depth := 0; depth <= i; depth++ {
		s := j.g.Stages[i]
		if s.Platform != "" {
			ps, err := newExpander(j.g.Escape, nil, j.meta).word(s.Platform)
			if err != nil {
				break
			}
			p, err := parsePlatform(ps)
			if err != nil {
				break
			}
			return p
		}
		parent, ok := j.stageParent(i)
		if !ok {
			break
		}
		i = parent
	}
	return j.o.Platform
}

// checkEmulation says which RUN steps of the build run under emulation,
// and fails, before any step runs, when one needs an emulator the machine
// lacks.
func checkEmulation(prog *progress.Progress, jobs []*job, target int) error {
	emu := &emulators{dir: jobs[0].o.BinfmtDir}
	for _, j := range jobs {
		j.emu = emu
		for _, i := range j.neededStages(target) {
			s := j.g.Stages[i]
			p := j.stagePlatform(i)
			if binfmt.Native(p) {
				continue
			}
			var runs []*parser.Step
			for _, step := range s.Steps {
				if _, ok := step.Op.(*parser.Run); ok {
					runs = append(runs, step)
				}
			}
			if len(runs) == 0 {
				continue
			}
			h, err := emu.find(p)
			if err != nil {
				return newStepError(runs[0].Pos, runs[0].Original, err)
			}
			for _, r := range runs {
				prog.Printf("emulating %s with %s (%s): %s%s", export.PlatformString(p), h.Name, h.Interpreter, j.label, oneLine(r.Original))
			}
		}
	}
	return nil
}

// checkRunPlatform refuses a RUN in a stage whose image is for a platform
// the machine can neither run nor emulate (a base image may turn out to be
// of another platform than the one asked for), so that no step silently
// runs the wrong architecture's programs.
func (j *job) checkRunPlatform(st *stageState) error {
	p := v1.Platform{OS: st.cfg.OS, Architecture: st.cfg.Architecture, Variant: st.cfg.Variant}
	if p.OS == "" || binfmt.Native(p) {
		return nil
	}
	emu := j.emu
	if emu == nil {
		emu = &emulators{dir: j.o.BinfmtDir}
		j.emu = emu
	}
	_, err := emu.find(p)
	return err
}

// commitIndex commits each platform's image and stores the index of them
// (export.AssembleIndex), tagged with the build's tags.
func commitIndex(ctx context.Context, jobs []*job, states []*stageState) (*Result, error) {
	var images []export.PlatformImage
	for i, j := range jobs {
		r, err := j.commitImage(ctx, states[i], false)
		if err != nil {
			return nil, err
		}
		images = append(images, export.PlatformImage{Platform: j.o.Platform, Image: r.Image,
			Annotations: descriptorAnnotations(j.o.Annotations.ManifestDescriptor)})
	}
	// Index annotations do not depend on the platform: any job's will do.
	ann := jobs[0].o.Annotations
	idx, err := export.AssembleIndex(images, ann.Index)
	if err != nil {
		return nil, err
	}
	b := jobs[0].b
	d, err := export.WriteIndex(ctx, b.store, idx)
	if err != nil {
		return nil, err
	}
	tags, err := b.tagAll(jobs[0].o.Tags, d)
	if err != nil {
		return nil, err
	}
	return &Result{ManifestDigest: d, Index: idx, Images: images, Tags: tags,
		IndexAnnotations: descriptorAnnotations(ann.Index), DescriptorAnnotations: descriptorAnnotations(ann.IndexDescriptor)}, nil
}

// storedManifest returns the manifest of a stored image for platform p:
// desc's own, or for an index (a multi-platform build's) the manifest
// listed for p, else desc's digest (which then fails to load as an image).
func (b *Builder) storedManifest(desc v1.Descriptor, p v1.Platform) v1.Hash {
	if !desc.MediaType.IsIndex() {
		return desc.Digest
	}
	idx, err := export.LoadIndex(b.store, desc.Digest)
	if err != nil {
		return desc.Digest
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return desc.Digest
	}
	want := export.PlatformString(NormalizePlatform(p))
	for _, d := range im.Manifests {
		if d.Platform != nil && export.PlatformString(NormalizePlatform(*d.Platform)) == want {
			return d.Digest
		}
	}
	return desc.Digest
}

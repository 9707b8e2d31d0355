package build

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/pull"
	"builder/export"
	"builder/imageref"
	"builder/parser"
)

// configResolver returns the config of the image ref names for platform;
// a nil config with a nil error means it is not known.
type configResolver func(ctx context.Context, ref string, platform v1.Platform) (*v1.ConfigFile, error)

// LintBases runs, for --check (--call check), the build checks that need
// the base images: UndefinedVar and InvalidBaseImagePlatform (see
// parser.Graph.LintBases), adding their warnings to g.Warnings. As
// BuildKit's check, it resolves the base image config of every stage (of
// those --target needs, with a target) for the first target platform:
// from the local store, else from the registry, fetching manifests and the
// config only, never layers. A base that cannot be resolved is an error at
// its FROM line, as BuildKit's check reports it, once the warnings found
// before are in g.Warnings.
func (b *Builder) LintBases(ctx context.Context, g *parser.Graph, o Options) error {
	ps, err := targetPlatforms(o)
	if err != nil {
		return err
	}
	o.Platform = ps[0]
	j := &job{b: b, o: o, g: g}
	if err := j.evalMetaArgs(); err != nil {
		return err
	}
	stages := make([]int, len(g.Stages))
	for i := range stages {
		stages[i] = i
	}
	if o.Target != "" {
		target, err := targetStage(g, o.Target)
		if err != nil {
			return err
		}
		stages = j.neededStages(target)
	}
	return j.lintBases(ctx, stages, j.baseConfig, true)
}

// lintBaseWarnings runs the checks of LintBases after a build, on the base
// images the build resolved (no registry is asked again): for the stages
// it built, as BuildKit checks the stages it builds.
func (j *job) lintBaseWarnings(ctx context.Context, target int) {
	cached := func(_ context.Context, ref string, platform v1.Platform) (*v1.ConfigFile, error) {
		norm, err := imageref.Normalize(ref)
		if err != nil {
			return nil, nil
		}
		j.imagesMu.Lock()
		img, ok := j.images[imageKey{ref: norm, platform: platformString(platform), pull: j.o.Pull}]
		j.imagesMu.Unlock()
		if !ok {
			return nil, nil
		}
		return img.config, nil
	}
	_ = j.lintBases(ctx, j.neededStages(target), cached, false)
}

// lintBases finds where each of stages starts and runs g.LintBases; with
// strict, a base resolve cannot resolve is an error at its FROM line, else
// the stage is skipped.
func (j *job) lintBases(ctx context.Context, stages []int, resolve configResolver, strict bool) error {
	bases := map[int]parser.StageBase{}
	var firstErr error
	for _, i := range stages {
		s := j.g.Stages[i]
		sb, err := j.stageBase(ctx, s, resolve)
		if err != nil {
			if strict && firstErr == nil {
				firstErr = newStepError(s.Pos, s.Original, err)
			}
			sb = parser.StageBase{Unknown: true}
		}
		bases[i] = sb
	}
	if firstErr != nil {
		// BuildKit stops at the error: no stage is checked.
		return firstErr
	}
	j.g.LintBases(parser.BaseLint{Stages: stages, Bases: bases, BuildArgs: j.o.BuildArgs, Global: j.meta})
	return nil
}

// stageBase finds where stage s starts, as fromBase does, without pulling
// more than resolve does.
func (j *job) stageBase(ctx context.Context, s *parser.Stage, resolve configResolver) (parser.StageBase, error) {
	unknown := parser.StageBase{Parent: -1, Unknown: true}
	if _, ok := j.named(s.Name); ok && s.Name != "" {
		return unknown, nil // replaced by a --build-context: its steps do not run
	}
	base, err := newExpander(j.g.Escape, nil, j.meta).word(s.Base)
	if err != nil || base == "" {
		return unknown, nil // the build reports it
	}
	if d, ok := j.g.StageBefore(base, s.Index); ok {
		return parser.StageBase{Parent: d.Index}, nil
	}
	platform := j.o.Platform
	if s.Platform != "" {
		ps, err := newExpander(j.g.Escape, nil, j.meta).word(s.Platform)
		if err != nil {
			return unknown, nil
		}
		if platform, err = parsePlatform(ps); err != nil {
			return unknown, nil
		}
	}
	if strings.EqualFold(base, "scratch") {
		return parser.StageBase{Parent: -1}, nil
	}
	if _, ok := j.named(base); ok {
		return unknown, nil // a --build-context: not resolved for the check
	}
	cfg, err := resolve(ctx, base, platform)
	if err != nil {
		return unknown, fmt.Errorf("%s: %w", base, err)
	}
	if cfg == nil {
		return unknown, nil
	}
	sb := parser.StageBase{Parent: -1, Env: cfg.Config.Env}
	if !samePlatform(cfg, platform) {
		sb.OtherPlatform, sb.Name = true, base
		sb.Expected = export.PlatformString(NormalizePlatform(platform))
		sb.Actual = export.PlatformString(NormalizePlatform(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}))
	}
	return sb, nil
}

// baseConfig resolves the config of a base image as the build would use
// it (resolveOnce): the stored image unless --pull, else through the
// registry, but fetching only manifests and the config.
func (j *job) baseConfig(ctx context.Context, ref string, platform v1.Platform) (*v1.ConfigFile, error) {
	b := j.b
	norm, err := imageref.Normalize(ref)
	if err != nil {
		return nil, err
	}
	if !j.o.Pull {
		if desc, err := b.index.Lookup(norm); err == nil && b.store.Has(desc.Digest) {
			if img, err := b.loadBase(b.storedManifest(desc, platform)); err == nil && samePlatform(img.config, platform) {
				return img.config, nil
			}
		}
	}
	if j.o.NoPull {
		return nil, fmt.Errorf("image %s (%s) is not in the local store, and --pull=never forbids pulling it", norm, platformString(platform))
	}
	if b.registry == nil {
		return nil, fmt.Errorf("image %s: no registry client", norm)
	}
	return pull.Config(ctx, b.registry, b.store, norm, pull.Options{Platform: platform})
}

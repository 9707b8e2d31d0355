package parser

import (
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/suggest"
)

// defaultPath is the PATH BuildKit gives a stage whose base has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// nonEnvArgs are the build args BuildKit never puts into the environment,
// and never reports as undefined.
var nonEnvArgs = map[string]bool{"BUILDKIT_SBOM_SCAN_CONTEXT": true, "BUILDKIT_SBOM_SCAN_STAGE": true}

// StageBase is where a stage starts, for LintBases: another stage, an
// image whose config is known, scratch (an image without Env), or
// something LintBases cannot know (Unknown: a named context), which skips
// the stage and the stages built on it.
type StageBase struct {
	Parent  int      // index of the stage it is built on, or -1
	Env     []string // the image config's Env, "KEY=VALUE"
	Unknown bool
	// OtherPlatform is set when the base image is of another OS or
	// architecture than the stage's: BuildKit's InvalidBaseImagePlatform
	// then names the image (Name, args expanded), the platform expected
	// and the image's, normalized as "os/arch[/variant]".
	OtherPlatform    bool
	Name             string
	Expected, Actual string
}

// BaseLint is the input of LintBases.
type BaseLint struct {
	// Stages are the stages to check, by index, in ascending order; each
	// one's StageBase is in Bases. A stage built on another must come
	// after it.
	Stages []int
	Bases  map[int]StageBase
	// BuildArgs are the --build-arg values; Global the global ARGs (with
	// the platform args), which an ARG without a default takes.
	BuildArgs map[string]string
	Global    shell.EnvGetter
}

// LintBases runs the two BuildKit rules that need each stage's base
// image, as BuildKit's dispatch runs them: InvalidBaseImagePlatform on a
// FROM whose image is of another platform than the stage's, and
// UndefinedVar on each variable an instruction expands (ENV, LABEL, COPY,
// ADD, WORKDIR, USER, VOLUME, STOPSIGNAL, RUN --mount, ARG
// defaults) that is neither in the stage's environment (the base image's
// Env, or the parent stage's, then ENV and ARG with a value) nor a
// declared ARG, with BuildKit's "did you mean" suggestion. Warnings are
// added to g.Warnings in line order.
func (g *Graph) LintBases(in BaseLint) {
	type state struct {
		env       *lintEnv
		buildArgs []string
	}
	states := map[int]*state{}
	quiet := linter.New(&linter.Config{})
	for _, i := range in.Stages {
		s := g.Stages[i]
		base, ok := in.Bases[i]
		if !ok || base.Unknown {
			continue
		}
		st := &state{}
		if base.Parent >= 0 {
			ps := states[base.Parent]
			if ps == nil {
				continue // unknown parent
			}
			st.env = ps.env.clone()
			st.buildArgs = slices.Clone(ps.buildArgs)
		} else {
			st.env = &lintEnv{}
			for _, kv := range base.Env {
				k, v, _ := strings.Cut(kv, "=")
				st.env.set(k, v)
			}
			if _, ok := st.env.Get("PATH"); !ok {
				st.env.set("PATH", defaultPath)
			}
			if sl, ok := g.stageLint[s]; ok && base.OtherPlatform {
				sl.lint.Run(&linter.RuleInvalidBaseImagePlatform, sl.loc,
					linter.RuleInvalidBaseImagePlatform.Format(base.Name, base.Expected, base.Actual))
			}
		}
		states[i] = st
		lex := shell.NewLex(g.Escape)
		for _, step := range s.Steps {
			sl, ok := g.stepLint[step]
			if !ok {
				continue
			}
			v, err := instructions.ParseInstructionWithLinter(sl.node, quiet)
			if err != nil {
				continue
			}
			env := st.env
			report := func(unmatched map[string]struct{}) {
				reportUndefined(sl, st.buildArgs, env, unmatched)
			}
			expand := func(lex *shell.Lex) func(string) (string, error) {
				return func(word string) (string, error) {
					w, unmatched, err := lex.ProcessWord(word, &lintBudget{env: env, left: maxLintWord})
					report(unmatched)
					return w, err
				}
			}
			if a, ok := v.(*instructions.ArgCommand); ok {
				for _, kv := range a.Args {
					var val *string
					if bv, ok := in.BuildArgs[kv.Key]; ok {
						val = &bv
					} else if kv.Value != nil {
						w, unmatched, err := lex.ProcessWord(*kv.Value, &lintBudget{env: env, left: maxLintWord})
						report(unmatched)
						if err == nil {
							val = &w
						}
					} else if in.Global != nil {
						if gv, ok := in.Global.Get(kv.Key); ok {
							val = &gv
						}
					}
					if val != nil && !nonEnvArgs[kv.Key] {
						st.env.set(kv.Key, *val)
					}
					st.buildArgs = append(st.buildArgs, kv.Key)
				}
				continue
			}
			if ex, ok := v.(instructions.SupportsSingleWordExpansion); ok {
				if ex.Expand(expand(lex)) != nil {
					continue
				}
			}
			if ex, ok := v.(instructions.SupportsSingleWordExpansionRaw); ok {
				raw := shell.NewLex('\\')
				raw.SkipProcessQuotes = true
				if ex.ExpandRaw(expand(raw)) != nil {
					continue
				}
			}
			if e, ok := v.(*instructions.EnvCommand); ok {
				for _, kv := range e.Env {
					st.env.set(kv.Key, kv.Value)
				}
			}
		}
	}
	sort.SliceStable(g.Warnings, func(i, j int) bool {
		return g.Warnings[i].Pos.Line < g.Warnings[j].Pos.Line
	})
}

// reportUndefined warns about each unmatched variable that is not a
// declared ARG, in name order.
func reportUndefined(sl stepLinter, buildArgs []string, env shell.EnvGetter, unmatched map[string]struct{}) {
	for _, v := range sortedKeys(unmatched) {
		if slices.Contains(buildArgs, v) || nonEnvArgs[v] {
			continue
		}
		hint, _ := suggest.Search(v, env.Keys(), true)
		sl.lint.Run(&linter.RuleUndefinedVar, sl.loc, linter.RuleUndefinedVar.Format(v, hint))
	}
}

// lintEnv is a stage's environment while LintBases walks it: keys in
// order of definition, each value cut to maxLintArg bytes (UndefinedVar
// needs the names; values that double with each ARG or ENV must not grow
// without bound).
type lintEnv struct {
	keys []string
	vals map[string]string
}

func (e *lintEnv) Get(k string) (string, bool) {
	v, ok := e.vals[k]
	return v, ok
}

func (e *lintEnv) Keys() []string { return e.keys }

// set defines k, in place if it is defined.
func (e *lintEnv) set(k, v string) {
	if len(v) > maxLintArg {
		v = v[:maxLintArg]
	}
	if e.vals == nil {
		e.vals = map[string]string{}
	}
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

func (e *lintEnv) clone() *lintEnv {
	return &lintEnv{keys: slices.Clone(e.keys), vals: maps.Clone(e.vals)}
}

// maxLintWord bounds the bytes of variable values one word's expansion
// reads during LintBases: UndefinedVar needs which names a word uses, not
// their values, and a word of thousands of references to a long value
// must not allocate gigabytes (testdata/invalid/limit-word-refs).
const maxLintWord = 64 << 10

// lintBudget is env for one word: once the values it returned reach left
// bytes, every defined variable reads as empty (still defined, so no
// false UndefinedVar).
type lintBudget struct {
	env  *lintEnv
	left int
}

func (b *lintBudget) Get(k string) (string, bool) {
	v, ok := b.env.Get(k)
	if !ok {
		return "", false
	}
	if len(v) > b.left {
		b.left = 0
		return "", true
	}
	b.left -= len(v)
	return v, true
}

func (b *lintBudget) Keys() []string { return b.env.Keys() }

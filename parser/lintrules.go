package parser

import (
	"regexp"
	"runtime"
	"slices"
	"strings"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/util/suggest"
)

// builtinArgs are the platform args every FROM may use without an ARG.
var builtinArgs = []string{"BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
	"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "TARGETSTAGE"}

// Names BuildKit's SecretsUsedInArgOrEnv rule treats as sensitive, and the
// words that make a name harmless again.
var (
	secretName  = regexp.MustCompile(`(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`)
	secretAllow = regexp.MustCompile(`(?i)(?:_|^)(?:public|file|version)(?:_|$)`)
)

// stageLint is what the per-stage rules track along a stage and the
// stages it is built on.
type stageLint struct {
	shell   bool // a SHELL instruction set the shell
	workdir bool // a WORKDIR set the working directory
}

// lintStages runs the BuildKit rules that BuildKit applies while it
// converts each stage: UndefinedArgInFrom, RedundantTargetPlatform,
// FromPlatformFlagConstDisallowed on FROM; JSONArgsRecommended,
// WorkdirRelativePath, SecretsUsedInArgOrEnv, ExposeProtoCasing and
// ExposeInvalidFormat on the instructions. What depends on the base image (its SHELL, ENV and
// WORKDIR) is taken as unset, as for most images.
func (p *parseState) lintStages(seen []seenInstruction) {
	lex := shell.NewLex(p.escape)
	meta := append([]string(nil), builtinArgs...)
	for _, a := range p.g.MetaArgs {
		for _, kv := range a.Pairs {
			meta = append(meta, kv.Key)
		}
	}
	metaEnv := shell.EnvsFromSlice(envPairs(meta))
	defaults := p.metaDefaults(lex)
	states := map[*Stage]*stageLint{}
	var cur *stageLint
	for _, s := range seen {
		n := s.node
		lint := p.lint.WithMergedConfigFromComments(n.PrevComment)
		loc := n.Location()
		if s.step == nil {
			cur = &stageLint{}
			if parent, ok := p.g.StageByName(s.stage.Base); ok && parent.Index < s.stage.Index {
				if ps := states[parent]; ps != nil {
					*cur = *ps
				}
			}
			states[s.stage] = cur
			p.lintFrom(lint, lex, metaEnv, meta, s.stage, loc)
			if base, _, err := lex.ProcessWord(s.stage.Base, defaults); err == nil {
				// distribution's parser, as BuildKit: go-containerregistry's
				// takes "/app:1" (an ARG without default) as valid.
				if _, err := reference.ParseNormalizedNamed(base); err != nil {
					lint.Run(&linter.RuleInvalidDefaultArgInFrom, loc, linter.RuleInvalidDefaultArgInFrom.Format(s.stage.Base))
				}
			}
			continue
		}
		switch op := s.step.Op.(type) {
		case *Shell:
			cur.shell = true
		case *Workdir:
			if !cur.workdir && !strings.HasPrefix(op.Path, "/") && !strings.HasPrefix(op.Path, "$") {
				lint.Run(&linter.RuleWorkdirRelativePath, loc, linter.RuleWorkdirRelativePath.Format(op.Path))
			}
			cur.workdir = true
		case *Cmd:
			if op.PrependShell && !cur.shell {
				lint.Run(&linter.RuleJSONArgsRecommended, loc, linter.RuleJSONArgsRecommended.Format(n.Value))
			}
		case *Entrypoint:
			if op.PrependShell && !cur.shell {
				lint.Run(&linter.RuleJSONArgsRecommended, loc, linter.RuleJSONArgsRecommended.Format(n.Value))
			}
		case *Arg:
			for _, kv := range op.Pairs {
				lintSecret(lint, "ARG", kv.Key, loc)
			}
		case *Env:
			for _, kv := range op.Pairs {
				lintSecret(lint, "ENV", kv.Key, loc)
			}
		case *Expose:
			for w := n.Next; w != nil; w = w.Next { // source order, as BuildKit warns
				port := w.Value
				if _, proto, ok := strings.Cut(port, "/"); ok && proto != strings.ToLower(proto) {
					lint.Run(&linter.RuleExposeProtoCasing, loc, linter.RuleExposeProtoCasing.Format(port))
				}
				if exposeMapsHost(port) {
					lint.Run(&linter.RuleExposeInvalidFormat, loc, linter.RuleExposeInvalidFormat.Format(port))
				}
			}
		}
	}
}

// maxLintArg bounds the value of one global ARG that metaDefaults keeps:
// an image reference is far shorter, and ARGs that double each other
// (a1=$a0$a0, a2=$a1$a1, ...) must not grow without bound while linting.
const maxLintArg = 4096

// metaDefaults evaluates the global ARGs as if no --build-arg were given,
// for InvalidDefaultArgInFrom; an ARG without a default, or whose value
// grows past maxLintArg, stays unset.
func (p *parseState) metaDefaults(lex *shell.Lex) shell.EnvGetter {
	env := []string{"TARGETPLATFORM=linux/" + runtime.GOARCH, "TARGETOS=linux", "TARGETARCH=" + runtime.GOARCH,
		"BUILDPLATFORM=linux/" + runtime.GOARCH, "BUILDOS=linux", "BUILDARCH=" + runtime.GOARCH}
	for _, a := range p.g.MetaArgs {
		for _, kv := range a.Pairs {
			if kv.Value == nil {
				continue
			}
			v, _, err := lex.ProcessWord(*kv.Value, shell.EnvsFromSlice(env))
			if err != nil || len(v) > maxLintArg {
				continue
			}
			env = append(env, kv.Key+"="+v)
		}
	}
	return shell.EnvsFromSlice(env)
}

// lintFrom checks a FROM's base name and --platform.
func (p *parseState) lintFrom(lint *linter.Linter, lex *shell.Lex, metaEnv shell.EnvGetter, meta []string, st *Stage, loc []bkparser.Range) {
	if _, unmatched, err := lex.ProcessWord(st.Base, metaEnv); err == nil {
		for _, v := range sortedKeys(unmatched) {
			hint, _ := suggest.Search(v, meta, true)
			lint.Run(&linter.RuleUndefinedArgInFrom, loc, linter.RuleUndefinedArgInFrom.Format(v, hint))
		}
	}
	if st.Platform == "" {
		return
	}
	switch st.Platform {
	case "$TARGETPLATFORM", "${TARGETPLATFORM}":
		lint.Run(&linter.RuleRedundantTargetPlatform, loc, linter.RuleRedundantTargetPlatform.Format(st.Platform))
		return
	}
	if strings.ContainsAny(st.Platform, "$") {
		return
	}
	pl, err := v1.ParsePlatform(st.Platform)
	if err != nil || strings.Contains(st.Name, pl.OS) || strings.Contains(st.Name, pl.Architecture) {
		return
	}
	lint.Run(&linter.RuleFromPlatformFlagConstDisallowed, loc, linter.RuleFromPlatformFlagConstDisallowed.Format(st.Platform))
}

// exposeMapsHost reports whether an EXPOSE port names a host IP or host
// port ("[IP:]HOSTPORT:PORT"), which EXPOSE ignores: the parts before the
// last two colons are the IP, the one before the last the host port.
func exposeMapsHost(port string) bool {
	parts := strings.Split(port, ":")
	n := len(parts)
	return n >= 2 && (parts[n-2] != "" || strings.Join(parts[:n-2], "") != "")
}

// lintSecret warns about an ARG or ENV whose name looks like a secret.
func lintSecret(lint *linter.Linter, instruction, key string, loc []bkparser.Range) {
	if secretName.MatchString(key) && !secretAllow.MatchString(key) {
		lint.Run(&linter.RuleSecretsUsedInArgOrEnv, loc, linter.RuleSecretsUsedInArgOrEnv.Format(instruction, key))
	}
}

// envPairs turns names into KEY= entries (values do not matter here).
func envPairs(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "="
	}
	return out
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

package parser

import (
	"path"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
)

// LintIgnored runs BuildKit's CopyIgnoredFile rule against the
// .dockerignore patterns m: a COPY (without --from) or ADD source from the
// build context that m excludes, itself or through a parent directory. As
// BuildKit does, it checks nothing when m has exclusions ("!pattern": a
// file may be re-included under an excluded directory), and warns about
// "." or "/" only when a pattern excludes everything ("*", "**", "**/*").
// URLs and git sources are not from the context; a source with a variable
// is skipped (its value may come from the base image's environment).
// Warnings are added to g.Warnings in line order; m == nil checks nothing.
func (g *Graph) LintIgnored(m *patternmatcher.PatternMatcher) error {
	if m == nil || m.Exclusions() || len(g.stepLint) == 0 {
		return nil
	}
	for _, st := range g.Stages {
		for _, step := range st.Steps {
			c, ok := step.Op.(*Copy)
			sl, linted := g.stepLint[step]
			if !ok || c.From != "" || !linted {
				continue
			}
			cmd := "Copy"
			if c.Add {
				cmd = "Add"
			}
			for _, src := range c.Sources {
				if strings.Contains(src, "$") || isRemoteSource(src) {
					continue
				}
				src = path.Clean(src)
				if (src == "." || src == "/") && !ignoresAll(m) {
					continue
				}
				hit, err := m.MatchesOrParentMatches(src)
				if err != nil {
					return err
				}
				if hit {
					sl.lint.Run(&linter.RuleCopyIgnoredFile, sl.loc, linter.RuleCopyIgnoredFile.Format(cmd, src))
				}
			}
		}
	}
	sort.SliceStable(g.Warnings, func(i, j int) bool {
		return g.Warnings[i].Pos.Line < g.Warnings[j].Pos.Line
	})
	return nil
}

// ignoresAll reports whether a pattern of m excludes every entry of the
// context root.
func ignoresAll(m *patternmatcher.PatternMatcher) bool {
	for _, p := range m.Patterns() {
		switch p.String() {
		case "*", "**", "**/*":
			return true
		}
	}
	return false
}

// stepLinter is what the rules run after parsing need of a step: its
// linter (with the # check= comments above it merged in), location and
// node.
type stepLinter struct {
	lint *linter.Linter
	loc  []bkparser.Range
	node *bkparser.Node
}

// isRemoteSource reports whether an ADD source is a URL or a git address
// rather than a path in the context.
func isRemoteSource(src string) bool {
	return strings.Contains(src, "://") || strings.HasPrefix(src, "git@")
}

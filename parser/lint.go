package parser

import (
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// reservedStageNames are names BuildKit warns about as stage names.
var reservedStageNames = []string{"context", "scratch"}

// seenInstruction is a FROM (step == nil) or a command of a stage, kept in
// source order for the whole-file lint rules.
type seenInstruction struct {
	node  *bkparser.Node
	stage *Stage
	step  *Step
}

// newLinter returns a linter that appends warnings to p.g. The # check=
// directive may skip rules or enable experimental ones; its error=true
// option sets Graph.ErrorOnWarnings (warnings never fail the parse itself).
// An invalid check value is ignored.
func (p *parseState) newLinter(check string) *linter.Linter {
	cfg, err := linter.ParseLintOptions(check)
	if err != nil {
		cfg = &linter.Config{}
	}
	p.g.ErrorOnWarnings = cfg.ReturnAsError
	cfg.ReturnAsError = false
	cfg.Warn = func(rule, _, url, msg string, loc []bkparser.Range) {
		w := Warning{Pos: Pos{File: p.file}, Rule: rule, Message: msg, URL: url}
		if len(loc) > 0 {
			w.Pos.Line = loc[0].Start.Line
			w.Pos.EndLine = loc[len(loc)-1].End.Line
		}
		p.g.Warnings = append(p.g.Warnings, w)
	}
	return linter.New(cfg)
}

// lintGraph runs the BuildKit lint rules that need only the parsed file
// (BuildKit runs them while converting to LLB): instruction casing, stage
// names, legacy ENV/LABEL syntax and repeated CMD/ENTRYPOINT/HEALTHCHECK.
func (p *parseState) lintGraph(seen []seenInstruction) {
	var lower, upper int
	for _, s := range seen {
		name := s.node.Value
		switch name {
		case strings.ToLower(name):
			lower++
		case strings.ToUpper(name):
			upper++
		}
	}
	majorityLower := lower > upper

	stageNames := map[string]bool{}
	type usedOnce struct{ cmd, entrypoint, healthcheck *bkparser.Node }
	var once usedOnce
	for _, s := range seen {
		n := s.node
		lint := p.lint.WithMergedConfigFromComments(n.PrevComment)
		loc := n.Location()

		name := n.Value
		if majorityLower && strings.ToLower(name) != name {
			lint.Run(&linter.RuleConsistentInstructionCasing, loc, linter.RuleConsistentInstructionCasing.Format(name, "lowercase"))
		} else if !majorityLower && strings.ToUpper(name) != name {
			lint.Run(&linter.RuleConsistentInstructionCasing, loc, linter.RuleConsistentInstructionCasing.Format(name, "uppercase"))
		}

		if s.step == nil {
			once = usedOnce{}
			if sn := s.stage.Name; sn != "" {
				for _, r := range reservedStageNames {
					if sn == r {
						lint.Run(&linter.RuleReservedStageName, loc, linter.RuleReservedStageName.Format(sn))
					}
				}
				if stageNames[sn] {
					lint.Run(&linter.RuleDuplicateStageName, loc, linter.RuleDuplicateStageName.Format(sn))
				}
				stageNames[sn] = true
			}
			continue
		}

		switch op := s.step.Op.(type) {
		case *Env:
			lintLegacy(lint, name, loc, op.Pairs)
		case *Label:
			lintLegacy(lint, name, loc, op.Pairs)
		case *Cmd:
			lintOnce(lint, name, n, &once.cmd)
		case *Entrypoint:
			lintOnce(lint, name, n, &once.entrypoint)
		case *Healthcheck:
			lintOnce(lint, name, n, &once.healthcheck)
		}
	}
}

// lintLegacy warns about the "ENV key value" form.
func lintLegacy(lint *linter.Linter, name string, loc []bkparser.Range, pairs []KeyValue) {
	for _, kv := range pairs {
		if kv.Legacy {
			lint.Run(&linter.RuleLegacyKeyValueFormat, loc, linter.RuleLegacyKeyValueFormat.Format(name))
		}
	}
}

// lintOnce warns, at the earlier instruction, when an instruction that only
// takes effect once per stage is repeated.
func lintOnce(lint *linter.Linter, name string, n *bkparser.Node, prev **bkparser.Node) {
	if *prev != nil {
		lint.Run(&linter.RuleMultipleInstructionsDisallowed, (*prev).Location(), linter.RuleMultipleInstructionsDisallowed.Format(name))
	}
	*prev = n
}

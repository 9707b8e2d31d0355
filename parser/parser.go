// Package parser turns a Dockerfile into builder's typed build graph.
//
// It uses BuildKit's Dockerfile parser (directives, line continuations,
// heredocs, JSON forms) and instruction parser (flags, typed commands,
// "did you mean" suggestions), and converts the result at once into this
// package's own types so that nothing else in builder depends on BuildKit's
// AST. Variables are not expanded here: words are kept exactly as BuildKit's
// instruction parser returns them, and the build executor expands them
// against the state of each stage.
//
// Parse and ParseOnbuild are pure functions: they hold no state between calls
// and are safe for concurrent use.
package parser

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// MaxSize is the largest Dockerfile Parse accepts, in bytes.
const MaxSize = 16 << 20

// maxLine is the longest physical line BuildKit's scanner accepts,
// including its newline.
const maxLine = bufio.MaxScanTokenSize

// Continuation regular expressions for the two escape tokens, the same as
// BuildKit's.
var (
	contBackslash = regexp.MustCompile(`([^\\])\\[ \t]*$|^\\[ \t]*$`)
	contBacktick  = regexp.MustCompile("([^`])`[ \\t]*$|^`[ \\t]*$")
)

// Parse reads a whole Dockerfile from r and parses it. file is the name used
// in positions and errors (normally the base name, "Dockerfile"). Every
// error is an *Error. The returned Graph always has at least one stage.
func Parse(file string, r io.Reader) (*Graph, error) {
	dt, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, &Error{Pos: Pos{File: file}, Err: fmt.Errorf("read: %w", err)}
	}
	if len(dt) > MaxSize {
		return nil, &Error{Pos: Pos{File: file}, Err: fmt.Errorf("file larger than %d bytes", MaxSize)}
	}
	p := &parseState{file: file, src: splitLines(dt)}
	return p.parse(dt)
}

// parseState holds what one Parse call needs to place errors.
type parseState struct {
	file   string
	src    [][]byte // physical lines, newline kept, BOM stripped from the first
	escape rune
	g      *Graph
	lint   *linter.Linter
}

func (p *parseState) parse(dt []byte) (*Graph, error) {
	hdr, err := p.scanDirectives()
	if err != nil {
		return nil, err
	}
	p.escape = hdr.escape
	if err := p.checkLineLengths(); err != nil {
		return nil, err
	}

	res, err := bkparser.Parse(bytes.NewReader(dt))
	if err != nil {
		return nil, p.sourceError(err)
	}
	p.escape = res.EscapeToken
	p.g = &Graph{File: p.file, Escape: res.EscapeToken, Syntax: hdr.syntax, SyntaxLine: hdr.syntaxLine, Source: dt}
	p.lint = p.newLinter(hdr.check)

	for _, w := range res.Warnings {
		if w.URL == linter.RuleNoEmptyContinuation.URL && w.Location != nil {
			p.lint.Run(&linter.RuleNoEmptyContinuation, []bkparser.Range{*w.Location}, linter.RuleNoEmptyContinuation.Format())
		}
	}

	var seen []seenInstruction
	for _, n := range res.AST.Children {
		v, err := instructions.ParseInstructionWithLinter(n, p.lint)
		if err != nil {
			return nil, p.nodeError(n, err)
		}
		switch c := v.(type) {
		case *instructions.Stage:
			s := &Stage{
				Index:    len(p.g.Stages),
				Name:     c.Name,
				Base:     c.BaseName,
				Platform: c.Platform,
				Pos:      p.nodePos(n),
				Original: c.SourceCode,

				Description: c.DocComment,
			}
			p.g.Stages = append(p.g.Stages, s)
			seen = append(seen, seenInstruction{node: n, stage: s})
			if p.g.stageLint == nil {
				p.g.stageLint = map[*Stage]stepLinter{}
			}
			p.g.stageLint[s] = stepLinter{lint: p.lint.WithMergedConfigFromComments(n.PrevComment), loc: n.Location(), node: n}
		case instructions.Command:
			op, err := convertCommand(c, n)
			if err == nil {
				err = checkCopyFrom(op, p.escape)
			}
			if err != nil {
				return nil, p.nodeError(n, err)
			}
			step := &Step{Pos: p.nodePos(n), Original: strings.TrimSpace(n.Original), Op: op}
			if len(p.g.Stages) == 0 {
				if a, ok := op.(*Arg); ok {
					p.g.MetaArgs = append(p.g.MetaArgs, a)
					p.g.MetaSteps = append(p.g.MetaSteps, step)
					continue
				}
				return nil, p.nodeError(n, errors.New("no build stage in current context"))
			}
			s := p.g.Stages[len(p.g.Stages)-1]
			s.Steps = append(s.Steps, step)
			if p.g.stepLint == nil {
				p.g.stepLint = map[*Step]stepLinter{}
			}
			p.g.stepLint[step] = stepLinter{lint: p.lint.WithMergedConfigFromComments(n.PrevComment), loc: n.Location(), node: n}
			seen = append(seen, seenInstruction{node: n, stage: s, step: step})
		default:
			return nil, p.nodeError(n, fmt.Errorf("%T is not a command type", v))
		}
	}
	if len(p.g.Stages) == 0 {
		pos := Pos{File: p.file}
		if len(p.g.MetaSteps) > 0 {
			pos = p.g.MetaSteps[0].Pos
		}
		return nil, &Error{Pos: pos, Err: errors.New("dockerfile contains no stages to build")}
	}
	if err := checkStageRefs(p.g); err != nil {
		return nil, err
	}
	p.lintGraph(seen)
	p.lintStages(seen)
	sort.SliceStable(p.g.Warnings, func(i, j int) bool {
		return p.g.Warnings[i].Pos.Line < p.g.Warnings[j].Pos.Line
	})
	return p.g, nil
}

// ParseOnbuild parses one ONBUILD trigger, as stored in an image config
// (Onbuild.Expression), into a Step placed at pos, normally the FROM line of
// the stage that inherits the trigger. The trigger is parsed with the
// default escape token, as BuildKit does. FROM, MAINTAINER and ONBUILD
// triggers are rejected. Every error is an *Error at pos.
func ParseOnbuild(expr string, pos Pos) (*Step, error) {
	first, _, _ := strings.Cut(strings.TrimSpace(expr), "\n")
	fail := func(err error) error {
		return &Error{Pos: pos, Instruction: strings.TrimSpace("ONBUILD " + first), Err: unlocate(err)}
	}
	res, err := bkparser.Parse(strings.NewReader(expr))
	if err != nil {
		return nil, fail(err)
	}
	if len(res.AST.Children) != 1 {
		return nil, fail(errors.New("onbuild trigger should be a single expression"))
	}
	n := res.AST.Children[0]
	n.StartLine, n.EndLine = pos.Line, pos.EndLine
	switch trigger := strings.ToUpper(n.Value); trigger {
	case "ONBUILD":
		//lint:ignore ST1005 BuildKit's exact message
		return nil, fail(errors.New("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"))
	case "FROM", "MAINTAINER":
		return nil, fail(fmt.Errorf("%s isn't allowed as an ONBUILD trigger", trigger))
	}
	v, err := instructions.ParseInstruction(n)
	if err != nil {
		return nil, fail(err)
	}
	c, ok := v.(instructions.Command)
	if !ok {
		return nil, fail(fmt.Errorf("%T is not a command type", v))
	}
	op, err := convertCommand(c, n)
	if err == nil {
		err = checkCopyFrom(op, bkparser.DefaultEscapeToken)
	}
	if err != nil {
		return nil, fail(err)
	}
	return &Step{Pos: pos, Original: strings.TrimSpace(n.Original), Op: op}, nil
}

// header is what the parser directives at the top of the file say.
type header struct {
	escape     rune
	syntax     string
	syntaxLine int
	check      string
}

// scanDirectives reads the parser directives the way BuildKit's parser does
// (first lines only, each at most once) so that directive errors get the
// right line: BuildKit reports them one line too early.
func (p *parseState) scanDirectives() (header, error) {
	h := header{escape: bkparser.DefaultEscapeToken}
	var dp bkparser.DirectiveParser
	for i, raw := range p.src {
		line := bytes.TrimLeftFunc(bytes.TrimRight(raw, "\r\n"), unicode.IsSpace)
		d, err := dp.ParseLine(line)
		if err != nil {
			return h, p.lineError(i+1, err)
		}
		if d == nil {
			// The first line that is not a directive ends the header;
			// later directive-like lines are comments.
			break
		}
		switch d.Name {
		case "escape":
			if d.Value != "`" && d.Value != `\` {
				return h, p.lineError(i+1, fmt.Errorf("invalid escape token '%s' does not match ` or \\", d.Value))
			}
			h.escape = rune(d.Value[0])
		case "syntax":
			h.syntax, h.syntaxLine = d.Value, i+1
		case "check":
			h.check, _, _ = strings.Cut(d.Value, " ")
		}
	}
	return h, nil
}

// checkLineLengths reports a line BuildKit's scanner cannot read at its own
// line; BuildKit places that error on the previous line.
func (p *parseState) checkLineLengths() error {
	for i, l := range p.src {
		if len(l) > maxLine || (len(l) == maxLine && l[len(l)-1] != '\n') {
			return p.lineError(i+1, fmt.Errorf("dockerfile line greater than max allowed size of %d", maxLine-1))
		}
	}
	return nil
}

// lineError is an error about physical line n that carries no instruction.
func (p *parseState) lineError(n int, err error) *Error {
	return &Error{Pos: Pos{File: p.file, Line: n, EndLine: n}, Err: err}
}

// nodePos is the position of an AST node.
func (p *parseState) nodePos(n *bkparser.Node) Pos {
	return Pos{File: p.file, Line: n.StartLine, EndLine: n.EndLine}
}

// nodeError places err at node n.
func (p *parseState) nodeError(n *bkparser.Node, err error) *Error {
	return &Error{Pos: p.nodePos(n), Instruction: strings.TrimSpace(n.Original), Err: unlocate(err)}
}

// sourceError places an error from BuildKit's line parser, which has no
// node, using the location the error carries and the source text there.
func (p *parseState) sourceError(err error) *Error {
	e := &Error{Pos: Pos{File: p.file}, Err: unlocate(err)}
	var le *bkparser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		r := le.Locations[0]
		e.Pos.Line = r[0].Start.Line
		e.Pos.EndLine = r[len(r)-1].End.Line
		e.Instruction = p.instructionAt(e.Pos.Line)
		if e.Instruction == "" && e.Err.Error() == "file with no instructions" {
			// BuildKit points at the last line; no line is to blame.
			e.Pos.Line, e.Pos.EndLine = 0, 0
		}
	}
	return e
}

// instructionAt rebuilds the instruction text that starts on physical line
// n the way BuildKit joins continuation lines, or returns "" if line n does
// not start an instruction.
func (p *parseState) instructionAt(n int) string {
	if n < 1 || n > len(p.src) {
		return ""
	}
	cont := contBackslash
	if p.escape == '`' {
		cont = contBacktick
	}
	var b strings.Builder
	for i := n - 1; i < len(p.src); i++ {
		line := bytes.TrimRight(p.src[i], "\r\n")
		if i == n-1 {
			line = bytes.TrimLeftFunc(line, unicode.IsSpace)
			if len(line) == 0 || line[0] == '#' {
				return ""
			}
		} else if t := bytes.TrimLeftFunc(line, unicode.IsSpace); len(t) == 0 || t[0] == '#' {
			continue
		}
		if !cont.Match(line) {
			b.Write(line)
			break
		}
		b.Write(cont.ReplaceAll(line, []byte("$1")))
	}
	return strings.TrimSpace(b.String())
}

// splitLines splits dt into lines the way BuildKit's scanner does, keeping
// line endings, and strips a UTF-8 byte order mark from the first line.
func splitLines(dt []byte) [][]byte {
	var out [][]byte
	for len(dt) > 0 {
		i := bytes.IndexByte(dt, '\n')
		if i < 0 {
			out = append(out, dt)
			break
		}
		out = append(out, dt[:i+1])
		dt = dt[i+1:]
	}
	if len(out) > 0 {
		out[0] = bytes.TrimPrefix(out[0], []byte{0xEF, 0xBB, 0xBF})
	}
	return out
}

// checkCopyFrom rejects variables in COPY --from as BuildKit does: the
// stage graph is fixed before any variable has a value.
func checkCopyFrom(op Op, escape rune) error {
	c, ok := op.(*Copy)
	if !ok || c.From == "" {
		return nil
	}
	res, err := shell.NewLex(escape).ProcessWordWithMatches(c.From, shell.EnvsFromSlice(nil))
	if err != nil {
		return err
	}
	if res.Result != c.From {
		return errors.New("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround")
	}
	return nil
}

// checkStageRefs rejects COPY --from and RUN --mount from= that name a stage
// (by name or index) not defined before the current one, with BuildKit's
// errors. As in BuildKit a name means the last stage of that name; a name
// that is no stage's is an image reference and is not checked here.
func checkStageRefs(g *Graph) error {
	last := map[string]int{}
	for _, s := range g.Stages {
		if s.Name != "" {
			last[s.Name] = s.Index
		}
	}
	ref := func(from string) (int, bool) {
		if n, err := strconv.Atoi(from); err == nil && strings.TrimLeft(from, "0123456789") == "" {
			return n, true
		}
		i, ok := last[strings.ToLower(from)]
		return i, ok
	}
	for _, s := range g.Stages {
		current := s.Name
		if current == "" {
			current = fmt.Sprintf("stage-%d", s.Index)
		}
		for _, step := range s.Steps {
			fail := func(err error) error {
				return &Error{Pos: step.Pos, Instruction: step.Original, Err: err}
			}
			switch op := step.Op.(type) {
			case *Copy:
				i, ok := ref(op.From)
				switch {
				case !ok || op.From == "" || i < s.Index:
				case i == s.Index:
					return fail(fmt.Errorf("circular dependency detected on stage: %s", current))
				default:
					return fail(fmt.Errorf("cannot copy from stage %q, it needs to be defined before current stage %q", op.From, current))
				}
			case *Run:
				for _, m := range op.Mounts {
					i, ok := ref(m.From)
					switch {
					case !ok || m.From == "" || i < s.Index:
					case i == s.Index:
						return fail(fmt.Errorf("circular dependency detected on stage: %s", current))
					default:
						return fail(fmt.Errorf("cannot mount from stage %q to %q, stage needs to be defined before current command", m.From, m.Target))
					}
				}
			}
		}
	}
	return nil
}

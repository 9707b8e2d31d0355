package parser

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Pos is a place in a Dockerfile: the file name as given to Parse and the
// first and last physical line (1-based) of an instruction, including its
// continuation lines and heredoc bodies. Line is 0 when no line applies,
// for example for an empty file.
type Pos struct {
	File    string
	Line    int
	EndLine int
}

// String returns "File:Line", or just File when Line is 0.
func (p Pos) String() string {
	if p.Line <= 0 {
		return p.File
	}
	return p.File + ":" + strconv.Itoa(p.Line)
}

// maxErrorInstruction is how many bytes of Error.Instruction Error() prints.
const maxErrorInstruction = 120

// Error is a Dockerfile that cannot be parsed. Every error returned by Parse
// and ParseOnbuild is an *Error.
type Error struct {
	Pos Pos
	// Instruction is the source text of the offending instruction with
	// line continuations joined, or "" when the error is not about one
	// instruction.
	Instruction string
	Err         error
}

// Error returns "Dockerfile:7: RUN foo bar: message", or
// "Dockerfile:7: message" when there is no instruction. An instruction longer
// than 120 bytes is cut and ends in "...".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Pos.String())
	b.WriteString(": ")
	if e.Instruction != "" {
		b.WriteString(shorten(e.Instruction, maxErrorInstruction))
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("unknown error")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// shorten cuts s to at most n bytes on a rune boundary and marks the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !validStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// validStart reports whether b can start a UTF-8 sequence.
func validStart(b byte) bool { return b&0xC0 != 0x80 }

// Graph is a parsed Dockerfile. Words are not expanded: the build expands
// them against the state of each stage. A Graph is never modified by this
// package after Parse returns.
type Graph struct {
	File string
	// MetaArgs are the ARG instructions before the first FROM, in order.
	MetaArgs []*Arg
	// MetaSteps holds the same ARG instructions as steps, with their
	// positions; MetaSteps[i].Op == MetaArgs[i].
	MetaSteps []*Step
	Stages    []*Stage
	// Escape is the escape token, '\\' or '`' (# escape= directive).
	Escape rune
	// Syntax is the value of the # syntax= directive, or "", and
	// SyntaxLine its line.
	Syntax     string
	SyntaxLine int
	// Warnings are lint-style findings BuildKit would report, ordered by
	// line. They stop a build only when ErrorOnWarnings is set.
	Warnings []Warning
	// Source is the Dockerfile as read, for printing warnings with their
	// lines (--check).
	Source []byte `json:"-"`
	// ErrorOnWarnings is set by "# check=error=true": a build must then
	// fail when there are Warnings (see LintError).
	ErrorOnWarnings bool
	// stepLint keeps each step's linter and node for LintIgnored and
	// LintBases, stageLint each FROM's.
	stepLint  map[*Step]stepLinter
	stageLint map[*Stage]stepLinter
}

// LintError returns BuildKit's "lint violation found for rules: ..." error
// when the file asks warnings to fail the build (# check=error=true) and
// there are warnings, else nil. Rules are listed once each, sorted.
func (g *Graph) LintError() error {
	if !g.ErrorOnWarnings || len(g.Warnings) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var rules []string
	for _, w := range g.Warnings {
		if !seen[w.Rule] {
			seen[w.Rule] = true
			rules = append(rules, w.Rule)
		}
	}
	sort.Strings(rules)
	return fmt.Errorf("lint violation found for rules: %s", strings.Join(rules, ", "))
}

// Warning is a lint finding: the BuildKit rule name (e.g. "FromAsCasing"),
// its message and documentation address.
type Warning struct {
	Pos     Pos
	Rule    string
	Message string
	URL     string
}

// String returns "Dockerfile:3: Rule: message".
func (w Warning) String() string {
	return w.Pos.String() + ": " + w.Rule + ": " + w.Message
}

// Stage is one FROM and the instructions after it.
type Stage struct {
	// Index is the position of the stage in Graph.Stages.
	Index int
	// Name is the stage name from "FROM x AS name", lower-cased, or "".
	Name string
	// Base is the FROM image or stage reference, unexpanded.
	Base string
	// Platform is the --platform value, unexpanded, or "".
	Platform string
	Pos      Pos
	// Original is the FROM instruction text.
	Original string
	Steps    []*Step
	// Description is the "# NAME text" comment right above the FROM, for
	// --call targets.
	Description string `json:"-"`
}

// StageByName finds a stage by its name (case-insensitively) or by its
// decimal index ("0", "1", ...). When several stages share a name the last
// one wins, as in BuildKit.
func (g *Graph) StageByName(name string) (*Stage, bool) {
	lname := strings.ToLower(name)
	for i := len(g.Stages) - 1; i >= 0; i-- {
		if s := g.Stages[i]; s.Name != "" && s.Name == lname {
			return s, true
		}
	}
	if name == "" || strings.TrimLeft(name, "0123456789") != "" {
		return nil, false
	}
	i, err := strconv.Atoi(name)
	if err != nil || i < 0 || i >= len(g.Stages) {
		return nil, false
	}
	return g.Stages[i], true
}

// StageBefore finds a stage that an instruction of stage index may refer to
// by name: only stages defined before index count and the latest one with
// the name wins. This is how BuildKit resolves "FROM name". It does not
// accept numeric indexes.
func (g *Graph) StageBefore(name string, index int) (*Stage, bool) {
	lname := strings.ToLower(name)
	if index > len(g.Stages) {
		index = len(g.Stages)
	}
	for i := index - 1; i >= 0; i-- {
		if s := g.Stages[i]; s.Name != "" && s.Name == lname {
			return s, true
		}
	}
	return nil, false
}

// Step is one instruction inside a stage.
type Step struct {
	Pos Pos
	// Original is the instruction source text with line continuations
	// joined (heredoc bodies excluded), as BuildKit keeps it.
	Original string
	Op       Op
}

// Op is the typed content of a Step. It is one of *Run, *Copy, *Env, *Label,
// *Arg, *Expose, *Volume, *User, *Workdir, *Shell, *Cmd, *Entrypoint,
// *Healthcheck, *StopSignal, *Onbuild or *Maintainer.
type Op interface{ isOp() }

// Run is RUN.
type Run struct {
	// Command is the exec-form argv, or for the shell form (PrependShell)
	// a single element holding the whole command line.
	Command      []string
	PrependShell bool
	// Mounts are the --mount flags in order. Their values are unexpanded:
	// the build calls ParseMount(m.Spec, expand) to get the final values.
	// A mount whose spec only parses after expansion (mode=$MODE) has an
	// empty Type; its From is always set since from= takes no variables.
	Mounts []*RunMount
	// Network is "default", "none" or "host".
	Network string
	// Security is "sandbox" or "insecure".
	Security string
	// Devices are the --device flags in order.
	Devices []*RunDevice
	// Heredocs are the here-documents of the line, in order. With heredocs
	// Command is always one shell-form word such as "<<EOF" or
	// "python3 <<EOF".
	Heredocs []Heredoc
}

// RunMount is one RUN --mount, mirroring BuildKit's instructions.Mount.
type RunMount struct {
	// Spec is the --mount value as written, e.g. "type=cache,target=/root".
	Spec     string
	Type     string // "bind", "cache", "tmpfs", "secret" or "ssh"; "" if deferred (see ParseMount)
	From     string
	Source   string
	Target   string
	ReadOnly bool
	ID       string
	Sharing  string // "shared", "private", "locked" or ""
	Mode     *uint64
	UID, GID *uint64
	Required bool
	Env      string
	Size     int64 // tmpfs size in bytes, 0 if unset
}

// RunDevice is one RUN --device.
type RunDevice struct {
	Name     string
	Required bool
}

// Copy is COPY, or ADD when Add is set.
type Copy struct {
	Add bool
	// Sources are the source paths or URLs, unexpanded, heredoc sources
	// excluded (see Heredocs).
	Sources []string
	Dest    string
	// From is COPY --from (stage name, index or image), "" for ADD.
	From       string
	Chown      string
	Chmod      string
	Link       bool
	Excludes   []string
	Parents    bool
	KeepGitDir bool      // ADD --keep-git-dir
	Checksum   string    // ADD --checksum
	Unpack     *bool     // ADD --unpack, nil when not given
	Heredocs   []Heredoc // inline sources; Name is the destination file name
}

// Heredoc is one here-document.
type Heredoc struct {
	// Name is the delimiter word with quotes removed; for COPY/ADD it is
	// also the file name.
	Name string
	// Content is the body exactly as written, up to the delimiter line,
	// including the final newline. See Text for the <<- form.
	Content string
	// Expand is false when the delimiter was quoted (<<"EOF", <<'EOF').
	Expand bool
	// Chomp is set for <<- (leading tabs are stripped from body lines).
	Chomp bool
}

// Text returns the body with leading tabs removed from every line when
// Chomp is set, or Content unchanged.
func (h Heredoc) Text() string {
	if h.Chomp {
		return bkparser.ChompHeredocContent(h.Content)
	}
	return h.Content
}

// Env is ENV, in both the K=V and the legacy "ENV K V" form.
type Env struct{ Pairs []KeyValue }

// Label is LABEL.
type Label struct{ Pairs []KeyValue }

// KeyValue is one ENV or LABEL pair. Legacy is set for the "K V" form.
type KeyValue struct {
	Key, Value string
	Legacy     bool
}

// Arg is ARG; "ARG A=1 B" has two pairs.
type Arg struct{ Pairs []ArgPair }

// ArgPair is one ARG name with its default value, nil when none is given.
type ArgPair struct {
	Key   string
	Value *string
	// Description is the "# KEY text" comment right above the ARG, for
	// --call outline; it is in no cache key.
	Description string `json:"-"`
}

// Expose is EXPOSE; Ports are sorted as BuildKit does.
type Expose struct{ Ports []string }

// Volume is VOLUME.
type Volume struct{ Paths []string }

// User is USER.
type User struct{ User string }

// Workdir is WORKDIR.
type Workdir struct{ Path string }

// Shell is SHELL (always the JSON form).
type Shell struct{ Shell []string }

// Cmd is CMD. Like Run.Command, the shell form is one element. An empty
// exec form (CMD []) is an empty, non-nil slice.
type Cmd struct {
	Command      []string
	PrependShell bool
}

// Entrypoint is ENTRYPOINT. "ENTRYPOINT []" gives a nil Command.
type Entrypoint struct {
	Command      []string
	PrependShell bool
}

// Healthcheck is HEALTHCHECK. Test[0] is "NONE", "CMD" (exec form) or
// "CMD-SHELL" (the rest is one shell command), as Docker stores it. Zero
// durations and retries mean "inherit the default".
type Healthcheck struct {
	Test                                          []string
	Interval, Timeout, StartPeriod, StartInterval time.Duration
	Retries                                       int
}

// StopSignal is STOPSIGNAL.
type StopSignal struct{ Signal string }

// Onbuild is ONBUILD; Expression is the trigger text without the ONBUILD
// keyword (heredoc bodies appended), as stored in the image config.
type Onbuild struct{ Expression string }

// Maintainer is the deprecated MAINTAINER.
type Maintainer struct{ Name string }

func (*Run) isOp()         {}
func (*Copy) isOp()        {}
func (*Env) isOp()         {}
func (*Label) isOp()       {}
func (*Arg) isOp()         {}
func (*Expose) isOp()      {}
func (*Volume) isOp()      {}
func (*User) isOp()        {}
func (*Workdir) isOp()     {}
func (*Shell) isOp()       {}
func (*Cmd) isOp()         {}
func (*Entrypoint) isOp()  {}
func (*Healthcheck) isOp() {}
func (*StopSignal) isOp()  {}
func (*Onbuild) isOp()     {}
func (*Maintainer) isOp()  {}

// Instruction returns the upper-case instruction keyword of op, e.g. "RUN"
// or "ADD".
func Instruction(op Op) string {
	switch o := op.(type) {
	case *Run:
		return "RUN"
	case *Copy:
		if o.Add {
			return "ADD"
		}
		return "COPY"
	case *Env:
		return "ENV"
	case *Label:
		return "LABEL"
	case *Arg:
		return "ARG"
	case *Expose:
		return "EXPOSE"
	case *Volume:
		return "VOLUME"
	case *User:
		return "USER"
	case *Workdir:
		return "WORKDIR"
	case *Shell:
		return "SHELL"
	case *Cmd:
		return "CMD"
	case *Entrypoint:
		return "ENTRYPOINT"
	case *Healthcheck:
		return "HEALTHCHECK"
	case *StopSignal:
		return "STOPSIGNAL"
	case *Onbuild:
		return "ONBUILD"
	case *Maintainer:
		return "MAINTAINER"
	default:
		return fmt.Sprintf("%T", op)
	}
}

package build

import (
	"fmt"
	"path"
	"strings"

	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"builder/parser"
)

// pipesDir is where a RUN heredoc that starts with "#!" is mounted, as
// BuildKit does: the script runs as /dev/pipes/<delimiter>.
const pipesDir = "/dev/pipes"

// inlineScript is the body of a lone RUN heredoc that starts with "#!": it
// is written to a file (mode 0755) mounted read-only under pipesDir for the
// run and executed.
type inlineScript struct {
	Name string
	Data string
}

// runArgv returns the argv of a RUN step the way BuildKit builds it:
//   - a lone heredoc ("RUN <<EOF") runs its body with the shell, or, when
//     the body starts with "#!", is written to a file and executed;
//   - any other line with heredocs ("RUN cat <<EOF > /x", several heredocs)
//     is given to the shell with the bodies and delimiters appended, so the
//     shell itself handles them (including <<- tab stripping).
//
// The shell form is then wrapped in the stage's SHELL.
func runArgv(st *stageState, op *parser.Run) ([]string, *inlineScript, error) {
	args := op.Command
	var script *inlineScript
	if len(op.Heredocs) > 0 {
		if len(args) != 1 || !op.PrependShell {
			return nil, nil, fmt.Errorf("parsing produced an invalid run command: %v", args)
		}
		if bkparser.MustParseHeredoc(args[0]) != nil {
			first := op.Heredocs[0]
			data := first.Text()
			if strings.HasPrefix(data, "#!") {
				if first.Name == "" || strings.Contains(first.Name, "/") || first.Name == "." || first.Name == ".." {
					return nil, nil, fmt.Errorf("heredoc name %q cannot name a script file", first.Name)
				}
				script = &inlineScript{Name: first.Name, Data: data}
				args = []string{path.Join(pipesDir, first.Name)}
			} else {
				args = []string{data}
			}
		} else {
			var b strings.Builder
			b.WriteString(args[0])
			for _, h := range op.Heredocs {
				b.WriteByte('\n')
				b.WriteString(h.Content)
				b.WriteString(h.Name)
			}
			args = []string{b.String()}
		}
	}
	if op.PrependShell {
		return append(st.shell(), strings.Join(args, " ")), script, nil
	}
	return append([]string(nil), args...), script, nil
}

// heredocContent is the file content of a COPY/ADD heredoc source: the body
// with <<- tabs stripped and, unless the delimiter was quoted, variables
// expanded as BuildKit does (quotes and backslashes kept as written).
func heredocContent(ex *expander, h parser.Heredoc) (string, error) {
	data := h.Text()
	if !h.Expand {
		return data, nil
	}
	lex := shell.NewLex('\\')
	lex.SkipProcessQuotes = true
	out, err := expandBounded(lex, data, ex.env)
	if err != nil {
		return "", fmt.Errorf("expand heredoc %s: %w", h.Name, err)
	}
	return out, nil
}

package build

import (
	"fmt"
	"regexp"

	"builder/parser"
)

// builtinFrontend matches the # syntax= references builder honours as its
// own Dockerfile frontend: docker/dockerfile (also as docker.io/docker/…
// or index.docker.io/docker/…) with no tag, a 1.x tag (1, 1.7, 1.7.1,
// 1-labs, 1.7-labs), latest or labs, and optionally a digest.
var builtinFrontend = regexp.MustCompile(`^(?:(?:index\.)?docker\.io/)?docker/dockerfile(?::(?:1(?:\.[0-9]+){0,2}(?:-labs)?|latest|labs))?(?:@sha256:[0-9a-f]{64})?$`)

// ErrUnsupportedSyntax is wrapped by the error for a # syntax= frontend
// other than docker/dockerfile:1 under Options.StrictSyntax.
var ErrUnsupportedSyntax = fmt.Errorf("unsupported # syntax= frontend")

// checkSyntax looks at the # syntax= directive: docker/dockerfile:1 and its
// variants are builder's own frontend; another frontend cannot run here,
// so the file is built as a plain Dockerfile with a warning, or, with
// strict, refused with an error at the directive's line.
func checkSyntax(g *parser.Graph, strict bool) (warning string, err error) {
	if g.Syntax == "" || builtinFrontend.MatchString(g.Syntax) {
		return "", nil
	}
	pos := parser.Pos{File: g.File, Line: g.SyntaxLine, EndLine: g.SyntaxLine}
	if strict {
		return "", &parser.Error{Pos: pos, Instruction: "# syntax=" + g.Syntax,
			Err: fmt.Errorf("%w: builder runs only its built-in docker/dockerfile:1 frontend (unset BUILDER_STRICT_SYNTAX to build it as a plain Dockerfile)", ErrUnsupportedSyntax)}
	}
	return fmt.Sprintf("%s: # syntax=%s: frontend not supported, building as a plain Dockerfile (docker/dockerfile:1)", pos, g.Syntax), nil
}

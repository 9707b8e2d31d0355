package build

import (
	"errors"
	"strings"
	"testing"

	"builder/parser"
)

func TestCheckSyntax(t *testing.T) {
	for _, c := range []struct {
		syntax  string
		builtin bool
	}{
		{"", true},
		{"docker/dockerfile:1", true},
		{"docker/dockerfile:1.7", true},
		{"docker/dockerfile:1.7.1", true},
		{"docker/dockerfile:1-labs", true},
		{"docker/dockerfile:1.7-labs", true},
		{"docker/dockerfile", true},
		{"docker/dockerfile:latest", true},
		{"docker.io/docker/dockerfile:1", true},
		{"index.docker.io/docker/dockerfile:1", true},
		{"docker/dockerfile:1@sha256:" + strings.Repeat("ab", 32), true},
		{"docker/dockerfile@sha256:" + strings.Repeat("ab", 32), true},
		{"docker/dockerfile:0.9", false},
		{"docker/dockerfile:2", false},
		{"docker/dockerfile:1.7-evil", false},
		{"docker/dockerfile-upstream:master", false},
		{"ghcr.io/docker/dockerfile:1", false},
		{"example.com/frontend:1", false},
		{"docker/dockerfile:1\n", false},
		{"docker/dockerfile:1 extra", false},
	} {
		src := "FROM scratch\n"
		if c.syntax != "" {
			src = "# syntax=" + c.syntax + "\n" + src
		}
		g, err := parser.Parse("Dockerfile", strings.NewReader(src))
		if err != nil {
			t.Fatalf("%q: %v", c.syntax, err)
		}
		if strings.ContainsAny(c.syntax, "\n ") { // not expressible as a directive line
			g.Syntax, g.SyntaxLine = c.syntax, 1
		}
		warning, err := checkSyntax(g, false)
		if err != nil || (warning == "") != c.builtin {
			t.Errorf("%q: warning %q, err %v", c.syntax, warning, err)
		}
		if !c.builtin && !strings.HasPrefix(warning, "Dockerfile:1: # syntax=") {
			t.Errorf("%q: warning %q does not name the line", c.syntax, warning)
		}
		_, err = checkSyntax(g, true)
		if (err == nil) != c.builtin {
			t.Errorf("%q strict: err %v", c.syntax, err)
		}
		var pe *parser.Error
		if err != nil && (!errors.Is(err, ErrUnsupportedSyntax) || !errors.As(err, &pe) || pe.Pos.Line != 1) {
			t.Errorf("%q strict: %v is not an ErrUnsupportedSyntax at line 1", c.syntax, err)
		}
	}
}

package copier

import (
	"testing"

	"github.com/moby/patternmatcher"
)

// TestDecidingPattern checks that a "not found" error can name the
// .dockerignore line that hid a source.
func TestDecidingPattern(t *testing.T) {
	for _, c := range []struct {
		patterns []string
		path     string
		want     string // "" when the path is not excluded
	}{
		{[]string{"*.log"}, "a.log", "*.log"},
		{[]string{"*.log", "!keep.log"}, "keep.log", ""},
		{[]string{"*.log", "!keep.log", "keep.log"}, "keep.log", "keep.log"},
		{[]string{"node_modules"}, "node_modules/x/y.js", "node_modules"},
		{[]string{"secret.txt", "**/*.txt"}, "secret.txt", "secret.txt"},
		{[]string{"docs", "!docs/README.md"}, "docs/other.md", "docs"},
		{[]string{"docs", "!docs/README.md"}, "docs/README.md", ""},
		{[]string{"src"}, "srcs/a", ""},
	} {
		pm, err := patternmatcher.New(c.patterns)
		if err != nil {
			t.Fatal(err)
		}
		got := decidingPattern(pm, c.path)
		if got != c.want {
			t.Errorf("patterns %q, path %q: deciding pattern %q, want %q", c.patterns, c.path, got, c.want)
		}
		// It must agree with the matcher about whether the path is hidden.
		if m, _ := pm.MatchesOrParentMatches(c.path); m != (got != "") {
			t.Errorf("patterns %q, path %q: matcher says excluded=%v, deciding pattern %q", c.patterns, c.path, m, got)
		}
	}
}

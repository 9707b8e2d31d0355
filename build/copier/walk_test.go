package copier

import (
	"context"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
)

// recorder is a visitor that lists the paths a walk reports.
type recorder struct{ paths []string }

func (r *recorder) enterDir(n *node) error {
	if n.rel != "" {
		r.paths = append(r.paths, n.rel)
	}
	return nil
}
func (r *recorder) leaveDir(*node) error { return nil }
func (r *recorder) leaf(n *node) error {
	r.paths = append(r.paths, n.rel)
	return nil
}

// TestWalkPrunesIgnoredDirs walks testdata/dockerignore-prune/context with
// several .dockerignore pattern sets and checks that the walk, which skips
// ignored directories no "!" pattern can reach into, reports exactly what
// a full walk filtered path by path reports (every visible path and the
// directories that lead to one), and that it never opened the directories
// the case says must be skipped.
func TestWalkPrunesIgnoredDirs(t *testing.T) {
	tree := filepath.Join("testdata", "dockerignore-prune", "context")
	cases := []struct {
		name     string
		patterns string
		pruned   []string // directories the walk must not open
		walked   []string // ignored directories it must open
	}{
		{"plain dir", "node_modules", []string{"node_modules"}, nil},
		{"negation below", "node_modules\n!node_modules/keep", []string{"node_modules/a", "node_modules/.bin"}, []string{"node_modules"}},
		{"suffix glob", "**/*.log", nil, nil},
		{"all but src", "*\n!src", []string{"node_modules", "target", ".cache", "docs"}, nil},
		{"all but docs md", "**\n!docs/*.md", []string{"node_modules", "src", "target", ".cache"}, []string{"docs"}},
		{"double star negation walks", "**/node_modules\n!**/keep", nil, []string{"node_modules/a", "src/node_modules"}},
		{"negated deeper glob", "src\n!src/lib/*.log", []string{"src/node_modules"}, []string{"src", "src/lib"}},
		{"children of a dir", "node_modules/*\n!node_modules/keep", []string{"node_modules/a", "node_modules/.bin"}, nil},
		{"several roots", ".cache\ntarget\n!target/release", []string{".cache", "target/debug"}, []string{"target"}},
		{"class in negation walks", "docs\n!doc[s]/readme.md", nil, []string{"docs", "docs/src"}},
		{"negation re-ignored", "node_modules\n!node_modules/keep\nnode_modules/keep/*.js", []string{"node_modules/a"}, []string{"node_modules/keep"}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			pm, err := patternmatcher.New(strings.Split(c.patterns, "\n"))
			must(t, err)
			want := fullWalkFiltered(t, tree, pm)

			sr, err := openRoot(tree)
			must(t, err)
			defer sr.close()
			src := Source{Root: tree, Ignore: pm, IsContext: true}
			sel, err := selectSources(context.Background(), sr, src, Request{Sources: []string{"."}, Dest: "/"})
			must(t, err)
			rec := &recorder{}
			var opened []string
			w := newWalker(context.Background(), pm, nil, rec)
			w.trace = func(rel string) { opened = append(opened, rel) }
			must(t, w.walkItem(sr, sel.items[0], ""))

			if !slices.Equal(rec.paths, want) {
				t.Errorf("pruned walk differs from the filtered full walk\n got: %q\nwant: %q", rec.paths, want)
			}
			for _, p := range c.pruned {
				if _, err := fs.Stat(os.DirFS(tree), p); err != nil {
					t.Fatalf("case names %s, which is not in the tree", p)
				}
				for _, o := range opened {
					if o == p || strings.HasPrefix(o, p+"/") {
						t.Errorf("walk opened %s below the skippable %s", o, p)
					}
				}
			}
			for _, p := range c.walked {
				if !slices.Contains(opened, p) {
					t.Errorf("walk did not open %s, which a negation may reach into (opened %q)", p, opened)
				}
			}
		})
	}
}

// fullWalkFiltered lists, in walk order, every path below tree that pm does
// not hide, plus the directories that lead to one.
func fullWalkFiltered(t *testing.T, tree string, pm *patternmatcher.PatternMatcher) []string {
	t.Helper()
	var all []string
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(tree, p)
		if err != nil || rel == "." {
			return err
		}
		all = append(all, filepath.ToSlash(rel))
		return nil
	})
	must(t, err)
	keep := map[string]bool{}
	for _, p := range all {
		hidden, err := pm.MatchesOrParentMatches(p)
		must(t, err)
		if hidden {
			continue
		}
		for q := p; q != "."; q = path.Dir(q) {
			keep[q] = true
		}
	}
	var out []string
	for _, p := range all {
		if keep[p] {
			out = append(out, p)
		}
	}
	return out
}

func TestPatternMayMatchBelow(t *testing.T) {
	cases := []struct {
		pattern, dir string
		want         bool
	}{
		{"node_modules/keep", "node_modules", true},
		{"node_modules/keep", "node_modules/a", false},
		{"node_modules/keep", "node_modules/keep", false}, // matches it, not below it
		{"node_modules", "node_modules", false},
		{"*/keep", "anything", true},
		{"*/keep", "a/b", false},
		{"**/keep", "a/b/c", true},
		{"a/**", "b", false},
		{"a/**", "a/b", true},
		{"src/*.go", "src", true},
		{"src/?ib/x", "src/lib", true},
		{"src/?ib/x", "src/glib", false},
		{"[ab]/x", "c", true}, // a class is assumed to match
		{`a\*/x`, "ab", true}, // so is an escape
	}
	for _, c := range cases {
		if got := patternMayMatchBelow(strings.Split(c.pattern, "/"), strings.Split(c.dir, "/")); got != c.want {
			t.Errorf("patternMayMatchBelow(%q, %q) = %v, want %v", c.pattern, c.dir, got, c.want)
		}
	}
}

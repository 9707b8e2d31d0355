package copier

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/moby/patternmatcher"
	"golang.org/x/sys/unix"
)

// item is one resolved source: a directory whose contents are copied, or
// a single non-directory.
type item struct {
	index int    // position in the selection, part of hard link ids
	name  string // the source as written (or the wildcard match), for errors
	base  string // name a non-directory gets inside a directory destination
	rel   string // resolved path below the source root, "." for the root; symlink-free
	st    unix.Stat_t
	// include holds the COPY --parents pattern, matched below rel.
	include *patternmatcher.PatternMatcher
	// includePattern is the pattern text, used to prune the walk.
	includePattern string
}

func (it *item) isDir() bool { return it.st.Mode&unix.S_IFMT == unix.S_IFDIR }

// selection is everything a request reads, resolved once and shared by
// Copy and Checksum so that both see exactly the same files.
type selection struct {
	items   []item
	exclude *patternmatcher.PatternMatcher
}

// NotFoundError reports a source that does not exist in the source root,
// is hidden by .dockerignore, or resolves (through a symlink) to such a
// path. It matches fs.ErrNotExist with errors.Is.
type NotFoundError struct {
	Source  string // the source as written
	Detail  string // why, when there is more to say than "not found"
	Ignored bool   // .dockerignore hides it
}

func (e *NotFoundError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("copy source %q: not found", e.Source)
	}
	return fmt.Sprintf("copy source %q: not found (%s)", e.Source, e.Detail)
}

// Unwrap makes errors.Is(err, fs.ErrNotExist) true.
func (e *NotFoundError) Unwrap() error { return fs.ErrNotExist }

// selector resolves the sources of one request.
type selector struct {
	ctx  context.Context
	root *root
	src  Source
	req  Request
}

// selectSources resolves every source of req in the source root.
func selectSources(ctx context.Context, sr *root, src Source, req Request) (*selection, error) {
	if len(req.Sources) == 0 {
		return nil, errors.New("copy: no source files were specified")
	}
	sel := &selection{}
	if len(req.Excludes) > 0 {
		m, err := patternmatcher.New(req.Excludes)
		if err != nil {
			return nil, fmt.Errorf("parse exclude patterns: %w", err)
		}
		sel.exclude = m
	}
	s := &selector{ctx: ctx, root: sr, src: src, req: req}
	for _, name := range req.Sources {
		items, err := s.resolveSource(name)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			it.index = len(sel.items)
			sel.items = append(sel.items, it)
		}
	}
	// No items: every source was a wildcard that matched nothing (a named
	// source that is missing is an error above), which BuildKit's
	// AllowEmptyWildcard makes a copy of nothing.
	if len(sel.items) > 1 && !destIsDirSyntax(req.Dest) {
		for _, it := range sel.items {
			if it.isDir() {
				continue
			}
			// ADD extracts each archive into the destination directory,
			// so several archives need no trailing slash.
			if req.Add && s.isArchive(it) {
				continue
			}
			return nil, fmt.Errorf("copy to %s: When using COPY with more than one source file, the destination must be a directory and end with a /", req.Dest)
		}
	}
	return sel, nil
}

// isArchive reports whether the item is a regular file holding a tar
// archive, which ADD extracts.
func (s *selector) isArchive(it item) bool {
	if it.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	f, err := openBeneath(s.root.fd(), it.rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return false
	}
	defer f.Close()
	return isArchive(f)
}

// destIsDirSyntax reports whether the destination as written names a
// directory: "/" or a path ending in "/" or "/.".
func destIsDirSyntax(dest string) bool {
	return strings.HasSuffix(dest, "/") || strings.HasSuffix(dest, "/.") || path.Clean("/"+dest) == "/"
}

// rootName names the source root in errors.
func (s *selector) rootName() string {
	if s.src.IsContext {
		return "build context"
	}
	return "source root"
}

// cleanRel turns a source path as written into a clean path relative to
// the root ("." for the root). It refuses paths that climb above the root.
func (s *selector) cleanRel(name, p string) (string, error) {
	rel := path.Clean(strings.TrimLeft(p, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("copy source %q: path escapes the %s", name, s.rootName())
	}
	return rel, nil
}

// resolveSource resolves one source as written into items. A wildcard
// source may resolve to none.
func (s *selector) resolveSource(name string) ([]item, error) {
	if !s.req.Parents {
		return s.resolvePath(name, name)
	}
	pivot, pattern, ok := strings.Cut(name, "/./")
	if !ok {
		pivot, pattern = "/", name
	}
	patRel, err := s.cleanRel(name, pattern)
	if err != nil {
		return nil, err
	}
	items, err := s.resolvePath(name, pivot)
	if err != nil {
		return nil, err
	}
	var inc *patternmatcher.PatternMatcher
	if patRel != "." {
		if inc, err = patternmatcher.New([]string{patRel}); err != nil {
			return nil, fmt.Errorf("copy source %q: parse pattern: %w", name, err)
		}
	}
	if !containsWildcards(pivot) && !containsWildcards(pattern) {
		for _, it := range items {
			if err := s.requireBelow(name, it.rel, patRel); err != nil {
				return nil, err
			}
		}
	}
	for i := range items {
		items[i].include = inc
		items[i].includePattern = patRel
	}
	return items, nil
}

// requireBelow checks that rel (below the directory dir) exists and is not
// ignored, without following a final symlink: COPY --parents copies a
// named symlink as a symlink.
func (s *selector) requireBelow(name, dir, rel string) error {
	if rel == "." {
		return nil
	}
	lex := path.Join(dir, rel)
	parent, err := s.root.resolve(path.Dir(lex))
	if err != nil {
		return fmt.Errorf("copy source %q: resolve: %w", name, err)
	}
	full := path.Join(parent, path.Base(lex))
	for _, p := range []string{lex, full} {
		if ign, err := s.ignored(p); err != nil {
			return err
		} else if ign {
			return s.ignoredError(name, p)
		}
	}
	f, err := openBeneath(s.root.fd(), full, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return s.openError(name, lex, full, err)
	}
	return f.Close()
}

// resolvePath resolves the path p of the source name, expanding wildcards.
func (s *selector) resolvePath(name, p string) ([]item, error) {
	rel, err := s.cleanRel(name, p)
	if err != nil {
		return nil, err
	}
	segs := strings.Split(rel, "/")
	i := slices.IndexFunc(segs, containsWildcards)
	if i < 0 {
		it, err := s.resolveNamed(name, rel, path.Base(rel))
		if err != nil {
			return nil, err
		}
		return []item{it}, nil
	}
	base := path.Join(segs[:i]...)
	if base == "" {
		base = "."
	}
	return s.expand(name, base, path.Join(segs[i:]...))
}

// ignored reports whether .dockerignore hides the root-relative path rel.
func (s *selector) ignored(rel string) (bool, error) {
	if s.src.Ignore == nil || rel == "." {
		return false, nil
	}
	m, err := s.src.Ignore.MatchesOrParentMatches(rel)
	if err != nil {
		return false, fmt.Errorf("match .dockerignore: %w", err)
	}
	return m, nil
}

// ignoredError is the error for a source that .dockerignore hides at the
// root-relative path rel: it names the pattern that decided, so the user
// knows which line to change.
func (s *selector) ignoredError(name, rel string) *NotFoundError {
	detail := "excluded by .dockerignore"
	if p := decidingPattern(s.src.Ignore, rel); p != "" {
		detail = fmt.Sprintf("excluded by .dockerignore pattern %q", p)
	}
	return &NotFoundError{Source: name, Detail: detail, Ignored: true}
}

// decidingPattern returns the pattern that makes pm exclude rel: the last
// one, in file order, that switched rel (or a parent of it) to excluded,
// as MatchesOrParentMatches decides. It returns "" if none does.
func decidingPattern(pm *patternmatcher.PatternMatcher, rel string) string {
	if pm == nil {
		return ""
	}
	var paths []string // rel and its parents
	for p := rel; p != "." && p != "/" && p != ""; p = path.Dir(p) {
		paths = append(paths, p)
	}
	excluded, decider := false, ""
	for _, pat := range pm.Patterns() {
		if pat.Exclusion() != excluded {
			continue // cannot change the outcome
		}
		one, err := patternmatcher.New([]string{pat.String()}) // Pattern's own match is unexported
		if err != nil {
			continue
		}
		for _, p := range paths {
			//lint:ignore SA1019 one pattern against each of the paths the caller lists, parents included
			if ok, err := one.Matches(p); err == nil && ok {
				excluded = !pat.Exclusion()
				if excluded {
					decider = pat.String()
				}
				break
			}
		}
	}
	if !excluded {
		return ""
	}
	return decider
}

// resolveNamed resolves the clean root-relative path lex, following
// symlinks inside the root. base is the name a non-directory gets in a
// directory destination.
func (s *selector) resolveNamed(name, lex, base string) (item, error) {
	resolved, err := s.root.resolve(lex)
	if err != nil {
		return item{}, fmt.Errorf("copy source %q: resolve: %w", name, err)
	}
	hidden := ""
	for _, p := range []string{lex, resolved} {
		ign, err := s.ignored(p)
		if err != nil {
			return item{}, err
		}
		if ign && hidden == "" {
			hidden = p
		}
	}
	f, err := openBeneath(s.root.fd(), resolved, unix.O_PATH)
	if err != nil {
		return item{}, s.openError(name, lex, resolved, err)
	}
	st, err := fstat(f)
	f.Close()
	if err != nil {
		return item{}, err
	}
	if base == "." {
		base = ""
	}
	it := item{name: name, base: base, rel: resolved, st: st}
	if hidden != "" {
		// An ignored directory is still there if a "!" pattern brings
		// back something below it.
		if !it.isDir() || !s.src.Ignore.Exclusions() {
			return item{}, s.ignoredError(name, hidden)
		}
		ok, err := s.hasVisible(it)
		if err != nil {
			return item{}, err
		}
		if !ok {
			return item{}, s.ignoredError(name, hidden)
		}
	}
	return it, nil
}

// openError turns a failed open of a resolved source into a clear error.
func (s *selector) openError(name, lex, resolved string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		if lex != resolved {
			return &NotFoundError{Source: name, Detail: fmt.Sprintf("it resolves to %q inside the %s", "/"+resolved, s.rootName())}
		}
		return &NotFoundError{Source: name}
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return fmt.Errorf("copy source %q: %w", name, errChanged)
	}
	return fmt.Errorf("copy source %q: %w", name, err)
}

// expand resolves a wildcard: pattern (one or more segments, the first
// holding a wildcard) is matched against paths below the root-relative
// directory base.
func (s *selector) expand(name, base, pattern string) ([]item, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("copy source %q: %w", name, err)
	}
	dirIt, err := s.resolveNamed(name, base, path.Base(base))
	if err != nil {
		return nil, err
	}
	if !dirIt.isDir() {
		return nil, nil
	}
	f, err := openBeneath(s.root.fd(), dirIt.rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, s.openError(name, base, dirIt.rel, err)
	}
	defer f.Close()
	depth := strings.Count(pattern, "/") + 1
	var out []item
	var walk func(dir *fileDir, rel string, level int) error
	walk = func(dir *fileDir, rel string, level int) error {
		names, err := dir.names()
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := s.ctx.Err(); err != nil {
				return err
			}
			childRel := joinRel(rel, n)
			full := joinRel(dirIt.rel, childRel)
			st, err := lstatAt(dir.fd(), n)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return fmt.Errorf("copy source %q: stat %s: %w", name, full, err)
			}
			isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
			ign, err := s.ignored(full)
			if err != nil {
				return err
			}
			if ign && !(isDir && mayReincludeBelow(s.src.Ignore, full)) {
				continue
			}
			if ok, _ := path.Match(pattern, childRel); ok {
				display := joinRel(base, childRel)
				it, err := s.resolveNamed(display, full, n)
				var nf *NotFoundError
				if errors.As(err, &nf) && nf.Ignored {
					continue
				}
				if err != nil {
					return err
				}
				out = append(out, it)
				continue
			}
			if isDir && level+1 < depth {
				sub, err := openDirAt(dir.fd(), n, full)
				if err != nil {
					return err
				}
				err = walk(&fileDir{sub}, childRel, level+1)
				sub.Close()
				if err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(&fileDir{f}, "", 0); err != nil {
		return nil, err
	}
	return out, nil
}

// hasVisible reports whether the ignored directory item has anything that
// a "!" pattern of .dockerignore brings back.
func (s *selector) hasVisible(it item) (bool, error) {
	f, err := openBeneath(s.root.fd(), it.rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return false, s.openError(it.name, it.rel, it.rel, err)
	}
	defer f.Close()
	w := newWalker(s.ctx, s.src.Ignore, nil, stopVisitor{})
	err = w.walkChildren(&node{file: f, st: it.st, emitted: true}, it.rel, patternmatcher.MatchInfo{}, patternmatcher.MatchInfo{}, patternmatcher.MatchInfo{})
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, err
}

// errFound stops a walk at the first visible entry.
var errFound = errors.New("found")

type stopVisitor struct{}

func (stopVisitor) enterDir(*node) error { return errFound }
func (stopVisitor) leaveDir(*node) error { return nil }
func (stopVisitor) leaf(*node) error     { return errFound }

// containsWildcards reports whether a path segment has an unescaped
// wildcard character.
func containsWildcards(name string) bool {
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '\\':
			i++
		case '*', '?', '[':
			return true
		}
	}
	return false
}

// joinRel joins a relative directory ("" or "." for the top) and a name.
func joinRel(dir, name string) string {
	if dir == "" || dir == "." {
		return name
	}
	return dir + "/" + name
}

package copier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/moby/patternmatcher"
	"golang.org/x/sys/unix"
)

// node is one entry met by the walker. Its file stays open only during the
// visitor call (for a directory: from enterDir to leaveDir).
type node struct {
	rel     string      // below the item root, slash separated; "" for the item root
	rootRel string      // below the source root; set for lazy regular files
	name    string      // base name; for a single-file item, the name to create
	st      unix.Stat_t // lstat of the entry
	file    *os.File    // directories and regular files: open for reading
	target  string      // symlink target
	xattrs  []xattr     // directories and regular files
	id      string      // identifies the entry for hard links
	linkOf  string      // id of an earlier entry with the same inode, if any
	emitted bool        // enterDir was called
}

func (n *node) isDir() bool { return n.st.Mode&unix.S_IFMT == unix.S_IFDIR }

// visitor receives the entries of a walk in lexical order: enterDir before
// a directory's children, leaveDir after them, leaf for everything else.
type visitor interface {
	enterDir(n *node) error
	leaveDir(n *node) error
	leaf(n *node) error
}

type devIno struct{ dev, ino uint64 }

// walker walks copied directories below the source root, applying
// .dockerignore (root-relative), --exclude and the --parents pattern
// (item-relative). A directory that is not itself selected but holds a
// selected entry is reported lazily, right before that entry.
type walker struct {
	ctx            context.Context
	ignore         *patternmatcher.PatternMatcher
	exclude        *patternmatcher.PatternMatcher
	include        *patternmatcher.PatternMatcher
	includePattern string
	v              visitor
	links          map[devIno]string
	stack          []*node
	item           int
	// lazyFiles makes the walk report regular files without opening
	// them: their node has no file and no xattrs, only the lstat and
	// rootRel. Checksum opens (or skips) them itself.
	lazyFiles bool
	// trace, when set, is told every directory the walk descends into
	// (by its path below the source root); tests use it.
	trace func(rootRel string)
}

func newWalker(ctx context.Context, ignore, exclude *patternmatcher.PatternMatcher, v visitor) *walker {
	return &walker{ctx: ctx, ignore: ignore, exclude: exclude, v: v, links: map[devIno]string{}}
}

// walkItem reports the item it, opened from the source root sr. For a
// directory item it reports the directory itself (rel "") and everything
// selected below it; for another item, one leaf named name.
func (w *walker) walkItem(sr *root, it item, name string) error {
	w.item = it.index
	w.include, w.includePattern = it.include, it.includePattern
	if !it.isDir() {
		n := &node{name: name, st: it.st}
		if w.lazyFiles && it.st.Mode&unix.S_IFMT == unix.S_IFREG {
			n.rootRel = it.rel
			w.linkInfo(n)
			return w.v.leaf(n)
		}
		flags := unix.O_PATH | unix.O_NOFOLLOW
		if it.st.Mode&unix.S_IFMT == unix.S_IFREG {
			flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK
		}
		f, err := openBeneath(sr.fd(), it.rel, flags)
		if err != nil {
			return fmt.Errorf("open %s: %w", it.name, err)
		}
		defer f.Close()
		if err := w.fill(n, f, it.name); err != nil {
			return err
		}
		return w.v.leaf(n)
	}
	f, err := openBeneath(sr.fd(), it.rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("open %s: %w", it.name, err)
	}
	defer f.Close()
	n := &node{st: it.st, emitted: true}
	if err := w.fill(n, f, it.name); err != nil {
		return err
	}
	var ign patternmatcher.MatchInfo
	if w.ignore != nil && it.rel != "." {
		if _, ign, err = w.ignore.MatchesUsingParentResults(it.rel, patternmatcher.MatchInfo{}); err != nil {
			return fmt.Errorf("match .dockerignore: %w", err)
		}
	}
	if err := w.v.enterDir(n); err != nil {
		return err
	}
	if err := w.walkChildren(n, it.rel, ign, patternmatcher.MatchInfo{}, patternmatcher.MatchInfo{}); err != nil {
		return err
	}
	return w.v.leaveDir(n)
}

// fill completes n from its open file f: it checks that f is still the
// entry that was stat'ed and reads what the visitors need.
func (w *walker) fill(n *node, f *os.File, display string) error {
	st, err := fstat(f)
	if err != nil {
		return err
	}
	if st.Dev != n.st.Dev || st.Ino != n.st.Ino || st.Mode&unix.S_IFMT != n.st.Mode&unix.S_IFMT {
		return fmt.Errorf("read %s: %w", display, errChanged)
	}
	n.st = st
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR, unix.S_IFREG:
		n.file = f
		if n.xattrs, err = listXattrs(f); err != nil {
			return err
		}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		w.linkInfo(n)
	}
	return nil
}

// linkInfo gives the regular file n its hard link id and, if an earlier
// entry of the walk is the same inode, that entry's id.
func (w *walker) linkInfo(n *node) {
	n.id = fmt.Sprintf("%d:%s", w.item, n.rel)
	if n.st.Nlink > 1 {
		key := devIno{uint64(n.st.Dev), n.st.Ino}
		if first, ok := w.links[key]; ok {
			n.linkOf = first
		} else {
			w.links[key] = n.id
		}
	}
}

// match runs m on p with the parent's match state; nil m matches nothing.
func match(m *patternmatcher.PatternMatcher, p string, parent patternmatcher.MatchInfo) (bool, patternmatcher.MatchInfo, error) {
	if m == nil {
		return false, patternmatcher.MatchInfo{}, nil
	}
	return m.MatchesUsingParentResults(p, parent)
}

// walkChildren walks the entries of the open directory parent. rootRel is
// parent's path below the source root; the match infos are parent's.
func (w *walker) walkChildren(parent *node, rootRel string, ign, exc, inc patternmatcher.MatchInfo) error {
	names, err := (&fileDir{parent.file}).names()
	if err != nil {
		return err
	}
	pfd := int(parent.file.Fd())
	for _, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		childRoot := joinRel(rootRel, name)
		childRel := joinRel(parent.rel, name)
		visible := true
		ignored, cIgn, err := match(w.ignore, childRoot, ign)
		if err != nil {
			return fmt.Errorf("match .dockerignore: %w", err)
		}
		if ignored {
			// An ignored entry is walked (unseen) only when a "!" pattern
			// could bring back something below it.
			if !mayReincludeBelow(w.ignore, childRoot) {
				continue
			}
			visible = false
		}
		excluded, cExc, err := match(w.exclude, childRel, exc)
		if err != nil {
			return fmt.Errorf("match exclude patterns: %w", err)
		}
		if excluded {
			if !mayReincludeBelow(w.exclude, childRel) {
				continue
			}
			visible = false
		}
		var cInc patternmatcher.MatchInfo
		if w.include != nil {
			var included bool
			if included, cInc, err = match(w.include, childRel, inc); err != nil {
				return fmt.Errorf("match --parents pattern: %w", err)
			}
			if !included {
				if !w.mayIncludeBelow(childRel) {
					continue
				}
				visible = false
			}
		}
		st, err := lstatAt(pfd, name)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", childRoot, err)
		}
		n := &node{rel: childRel, name: name, st: st}
		if !n.isDir() {
			if !visible {
				continue
			}
			if err := w.visitLeaf(pfd, n, childRoot); err != nil {
				return err
			}
			continue
		}
		if w.trace != nil {
			w.trace(childRoot)
		}
		f, err := openDirAt(pfd, name, childRoot)
		if err != nil {
			return err
		}
		err = w.visitDir(n, f, childRoot, visible, cIgn, cExc, cInc)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) visitDir(n *node, f *os.File, rootRel string, visible bool, ign, exc, inc patternmatcher.MatchInfo) error {
	if err := w.fill(n, f, rootRel); err != nil {
		return err
	}
	w.stack = append(w.stack, n)
	defer func() { w.stack = w.stack[:len(w.stack)-1] }()
	if visible {
		if err := w.emitPending(); err != nil {
			return err
		}
	}
	if err := w.walkChildren(n, rootRel, ign, exc, inc); err != nil {
		return err
	}
	if n.emitted {
		return w.v.leaveDir(n)
	}
	return nil
}

func (w *walker) visitLeaf(pfd int, n *node, rootRel string) error {
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if w.lazyFiles {
			n.rootRel = rootRel
			w.linkInfo(n)
			break
		}
		fd, err := unix.Openat(pfd, n.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: rootRel, Err: err}
		}
		f := os.NewFile(uintptr(fd), rootRel)
		defer f.Close()
		if err := w.fill(n, f, rootRel); err != nil {
			return err
		}
	case unix.S_IFLNK:
		t, err := readlinkAt(pfd, n.name)
		if err != nil {
			return &os.PathError{Op: "readlink", Path: rootRel, Err: err}
		}
		n.target = t
	}
	if err := w.emitPending(); err != nil {
		return err
	}
	return w.v.leaf(n)
}

// emitPending reports the directories on the stack that were held back.
func (w *walker) emitPending() error {
	for _, d := range w.stack {
		if d.emitted {
			continue
		}
		if err := w.v.enterDir(d); err != nil {
			return err
		}
		d.emitted = true
	}
	return nil
}

// mayIncludeBelow reports whether the --parents pattern could match a path
// below the directory rel, which it does not match itself. It errs on the
// side of walking.
func (w *walker) mayIncludeBelow(rel string) bool {
	pat := strings.Split(w.includePattern, "/")
	for i, seg := range strings.Split(rel, "/") {
		if i >= len(pat) {
			return false
		}
		if strings.Contains(pat[i], "**") || strings.ContainsAny(pat[i], `[\`) {
			return true
		}
		if ok, _ := path.Match(pat[i], seg); !ok {
			return false
		}
	}
	return true
}

// mayReincludeBelow reports whether an exclusion ("!") pattern of m could
// match a path strictly below rel, a path that m matches. When it cannot,
// nothing below rel can be visible: every pattern that matched rel still
// matches below it (patterns match a path's parents too), an inclusion
// pattern can only keep it hidden, and only an exclusion pattern that
// matches a deeper path itself can bring it back. This is what lets the
// walk skip an ignored node_modules or .git without reading it.
//
// The test is per path segment and errs on the side of walking: a segment
// holding "**" may span any number of segments, and one holding a
// character class or an escape is assumed to match.
func mayReincludeBelow(m *patternmatcher.PatternMatcher, rel string) bool {
	if m == nil || !m.Exclusions() {
		return false
	}
	dirs := strings.Split(rel, "/")
	for _, p := range m.Patterns() {
		if p.Exclusion() && patternMayMatchBelow(strings.Split(p.String(), "/"), dirs) {
			return true
		}
	}
	return false
}

// patternMayMatchBelow reports whether the pattern segments pat could
// match a path that has dirs as a proper prefix.
func patternMayMatchBelow(pat, dirs []string) bool {
	for i, d := range dirs {
		if i >= len(pat) {
			return false
		}
		if strings.Contains(pat[i], "**") || strings.ContainsAny(pat[i], `[]\`) {
			return true
		}
		if ok, err := path.Match(pat[i], d); err != nil || !ok {
			return err != nil
		}
	}
	return len(pat) > len(dirs)
}

// fileDir lists an open directory.
type fileDir struct{ f *os.File }

func (d *fileDir) fd() int { return int(d.f.Fd()) }

// names returns the directory's entry names, sorted.
func (d *fileDir) names() ([]string, error) {
	if _, err := d.f.Seek(0, 0); err != nil {
		return nil, fmt.Errorf("rewind %s: %w", d.f.Name(), err)
	}
	names, err := d.f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", d.f.Name(), err)
	}
	slices.Sort(names)
	return names, nil
}

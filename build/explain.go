package build

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/patternmatcher"

	"builder/build/copier"
	"builder/build/progress"
	"builder/internal/atomicfile"
	"builder/parser"
)

// Directories below the cache directory that keep what --explain-cache
// needs: the last preimage of every Dockerfile step, and the per-file
// digests of COPY sources by their checksum.
const (
	stepsDir = "steps"
	filesDir = "files"
)

// Limits that keep the explanation data small.
const (
	maxListedFiles = 20000   // a COPY source file list stops here
	maxHashedFile  = 8 << 20 // bigger files are listed by size and mtime
	maxNamedPaths  = 5       // paths an explanation names before "and N more"
)

// stepEntry is what the store keeps about the last build of one Dockerfile
// step (found by stepID): its key, preimage and source text.
type stepEntry struct {
	Key      Key             `json:"key"`
	Text     string          `json:"text"`
	Preimage json.RawMessage `json:"preimage"`
}

// stepID names a Dockerfile step across builds: the Dockerfile's path, the
// stage, the step's position in the stage and its instruction kind.
func (j *job) stepID(st *stageState, step *parser.Step, op string) string {
	df, err := filepath.Abs(j.o.Dockerfile)
	if err != nil {
		df = j.o.Dockerfile
	}
	pos := "line" + strconv.Itoa(step.Pos.Line)
	if st.index < len(j.g.Stages) {
		if i := slices.Index(j.g.Stages[st.index].Steps, step); i >= 0 {
			pos = strconv.Itoa(i)
		}
	}
	sum := sha256.Sum256([]byte(df + "\x00" + strconv.Itoa(st.index) + "\x00" + pos + "\x00" + op))
	return hex.EncodeToString(sum[:16])
}

// explain keeps the step index up to date and, on a cache miss with
// --explain-cache, prints why the step missed: the first input that
// differs from the last build of the same Dockerfile step. files, if not
// nil, lists a COPY's source files; it is called only on a miss, and its
// result is kept under the source checksum for later explanations. sp may
// be nil (the line then goes to the build's progress). Failures to read or
// write the index are ignored: explanations are advisory and never fail a
// build.
func (j *job) explain(ctx context.Context, sp *progress.Step, st *stageState, step *parser.Step, key Key, preimage []byte, files func() map[string]string, hit bool) {
	var cur keyPreimage
	if json.Unmarshal(preimage, &cur) != nil {
		return
	}
	id := j.stepID(st, step, cur.Op)
	prev, havePrev := j.b.cache.loadStep(id)
	if !hit {
		var curFiles map[string]string
		if files != nil && cur.Inputs["sources"] != "" {
			curFiles = files()
			if curFiles != nil {
				j.b.cache.saveFiles(cur.Inputs["sources"], curFiles)
			}
		}
		if j.o.ExplainCache {
			reason := j.missReason(st, step, prev, havePrev, cur, curFiles)
			line := "cache miss: " + reason
			if sp != nil {
				fmt.Fprintln(sp, line)
			} else {
				j.progress.Printf("%s: %s", historyText(step.Original), line)
			}
		}
	}
	if !havePrev || prev.Key != key || prev.Text != step.Original {
		j.b.cache.saveStep(id, stepEntry{Key: key, Text: step.Original, Preimage: preimage})
	}
}

// missReason names the first input of cur that differs from the earlier
// build prev of the same step.
func (j *job) missReason(st *stageState, step *parser.Step, prev stepEntry, havePrev bool, cur keyPreimage, curFiles map[string]string) string {
	if j.o.NoCache {
		return "--no-cache is set"
	}
	if !havePrev {
		return "no earlier build of this step is recorded"
	}
	var old keyPreimage
	if json.Unmarshal(prev.Preimage, &old) != nil {
		return "the earlier build's record is unreadable"
	}
	if prev.Text != step.Original {
		return fmt.Sprintf("instruction changed: was %q", oneLine(prev.Text))
	}
	if !slices.Equal(old.Args, cur.Args) {
		return j.argsReason(old.Args, cur.Args)
	}
	for _, k := range unionKeys(old.State, cur.State) {
		ov, nv := old.State[k], cur.State[k]
		if ov == nv {
			continue
		}
		if k == "env" {
			if r := j.envReason(st, ov, nv); r != "" {
				return r
			}
		}
		if plainState[k] {
			return fmt.Sprintf("%s changed: %q, was %q", k, nv, ov)
		}
		return fmt.Sprintf("%s changed: %s, was %s", k, j.redact(nv), j.redact(ov))
	}
	if old.Parent != cur.Parent {
		op, np := old.Parent, cur.Parent
		if strings.HasPrefix(op, "image:") && strings.HasPrefix(np, "image:") {
			return fmt.Sprintf("base image changed: config %s, was %s", strings.TrimPrefix(np, "image:"), strings.TrimPrefix(op, "image:"))
		}
		if strings.HasPrefix(op, "image:") || strings.HasPrefix(np, "image:") || op == "scratch" || np == "scratch" {
			return "base image changed"
		}
	}
	for _, k := range unionKeys(old.Inputs, cur.Inputs) {
		ov, nv := old.Inputs[k], cur.Inputs[k]
		if ov == nv {
			continue
		}
		switch k {
		case "sources":
			return j.filesReason(ov, nv, curFiles)
		case "inline", "script":
			return "heredoc content changed"
		}
		return fmt.Sprintf("input %s changed", k)
	}
	if old.Parent != cur.Parent {
		return "parent step changed (an earlier step was rebuilt)"
	}
	return "the step's record is gone from the cache (pruned, or its layer was removed)"
}

// plainState lists the step state whose values explanations print as they
// are: fixed words that no variable can set. All other values (user,
// workdir, mounts, chown, the environment...) may hold a build arg's value
// and are shown as redact does.
var plainState = map[string]bool{"network": true, "security": true, "parents": true, "epoch": true}

// argsReason explains a change of a step's expanded arguments, which may
// hold variables' values: it names the first argument that differs and
// shows redacted values.
func (j *job) argsReason(old, cur []string) string {
	if len(old) != len(cur) {
		return fmt.Sprintf("instruction arguments changed (a variable's value): %d arguments, was %d", len(cur), len(old))
	}
	for i := range cur {
		if cur[i] != old[i] {
			return fmt.Sprintf("instruction arguments changed (a variable's value): argument %d is %s, was %s", i+1, j.redact(cur[i]), j.redact(old[i]))
		}
	}
	return "instruction arguments changed"
}

// envReason explains a change of a RUN's environment, naming the variable
// and whether it is a build arg; values are redacted.
func (j *job) envReason(st *stageState, oldJSON, newJSON string) string {
	var ov, nv []string
	if json.Unmarshal([]byte(oldJSON), &ov) != nil || json.Unmarshal([]byte(newJSON), &nv) != nil {
		return ""
	}
	om, nm := envMap(ov), envMap(nv)
	for _, k := range unionKeys(om, nm) {
		o, oin := om[k]
		n, nin := nm[k]
		if o == n && oin == nin {
			continue
		}
		kind := "environment variable"
		if _, ok := st.args.Get(k); ok {
			kind = "build arg"
		}
		switch {
		case !oin:
			return fmt.Sprintf("%s %s added: %s", kind, k, j.redact(n))
		case !nin:
			return fmt.Sprintf("%s %s removed (was %s)", kind, k, j.redact(o))
		}
		return fmt.Sprintf("%s %s changed: %s, was %s", kind, k, j.redact(n), j.redact(o))
	}
	return ""
}

// redact shows a value that may be secret (a build arg's, or anything
// expanded from one) in a log: "" stays "", anything else becomes "value"
// and the first 12 hex digits of its HMAC-SHA256 under the store's redact
// key. Two different values are told apart (a collision takes about 2^24
// values), the same value looks the same in every build on one store, and
// the log alone does not let anyone test guesses: an unkeyed hash of a
// low-entropy password would be found by hashing a dictionary, while the
// key is readable only where the store's cache records, which hold the
// values anyway, are.
func (j *job) redact(v string) string {
	if v == "" {
		return `""`
	}
	m := hmac.New(sha256.New, j.b.cache.redactKey())
	m.Write([]byte(v))
	return "value " + hex.EncodeToString(m.Sum(nil)[:6])
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func unionKeys[V any](a, b map[string]V) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// filesReason compares the file lists kept for two COPY source checksums.
func (j *job) filesReason(oldSum, newSum string, curFiles map[string]string) string {
	of, ok := j.b.cache.loadFiles(oldSum)
	if curFiles == nil {
		curFiles, _ = j.b.cache.loadFiles(newSum)
	}
	if !ok || curFiles == nil {
		return "source files changed (no file list kept to say which)"
	}
	var changed, added, removed []string
	for _, p := range unionKeys(of, curFiles) {
		o, oin := of[p]
		n, nin := curFiles[p]
		switch {
		case !oin:
			added = append(added, p)
		case !nin:
			removed = append(removed, p)
		case o != n:
			changed = append(changed, p)
		}
	}
	var parts []string
	for _, g := range []struct {
		word  string
		paths []string
	}{{"changed", changed}, {"added", added}, {"removed", removed}} {
		if len(g.paths) == 0 {
			continue
		}
		s := g.word + " " + strings.Join(g.paths[:min(len(g.paths), maxNamedPaths)], ", ")
		if n := len(g.paths) - maxNamedPaths; n > 0 {
			s += fmt.Sprintf(" and %d more", n)
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "source files changed (metadata the file list does not show, e.g. ownership or xattrs)"
	}
	return "source files " + strings.Join(parts, "; ")
}

// contextFiles returns a function listing the files a COPY from the build
// context reads, for explanations: each path (relative to the context)
// with its type, mode, size and content digest. It follows copier's
// selection closely but not exactly (it globs with path.Match rules and
// applies .dockerignore and --exclude); it reads only. It returns nil for
// other sources.
func (j *job) contextFiles(cs copySource, req copier.Request) func() map[string]string {
	if cs.layers != nil || cs.src.Root == "" {
		return nil
	}
	return func() map[string]string {
		var excl *patternmatcher.PatternMatcher
		if len(req.Excludes) > 0 {
			excl, _ = patternmatcher.New(req.Excludes)
		}
		hidden := func(rel string) bool {
			if cs.src.Ignore != nil {
				if m, _ := cs.src.Ignore.MatchesOrParentMatches(rel); m {
					return true
				}
			}
			if excl != nil {
				if m, _ := excl.MatchesOrParentMatches(rel); m {
					return true
				}
			}
			return false
		}
		out := map[string]string{}
		root := cs.src.Root
		for _, s := range req.Sources {
			rel := strings.TrimPrefix(path.Clean("/"+s), "/")
			matches, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(rel)))
			for _, m := range matches {
				_ = filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
					if err != nil || len(out) >= maxListedFiles {
						return filepath.SkipAll
					}
					r, err := filepath.Rel(root, p)
					if err != nil || r == ".." || strings.HasPrefix(r, "../") {
						return filepath.SkipDir
					}
					r = filepath.ToSlash(r)
					if r != "." && hidden(r) {
						if d.IsDir() {
							return filepath.SkipDir
						}
						return nil
					}
					out[r] = fileSummary(p, d)
					return nil
				})
			}
		}
		return out
	}
}

// fileSummary is one line about a file: type and mode, size, and the
// sha256 of small regular files (size and mtime for big ones) or a
// symlink's target.
func fileSummary(p string, d fs.DirEntry) string {
	fi, err := d.Info()
	if err != nil {
		return "?"
	}
	s := fmt.Sprintf("%s %d", fi.Mode(), fi.Size())
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, _ := os.Readlink(p)
		s += " -> " + t
	case fi.Mode().IsRegular() && fi.Size() <= maxHashedFile:
		f, err := os.Open(p)
		if err != nil {
			return s
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err == nil {
			s += " " + hex.EncodeToString(h.Sum(nil)[:16])
		}
	case fi.Mode().IsRegular():
		s += " mtime " + strconv.FormatInt(fi.ModTime().UnixNano(), 10)
	}
	return s
}

// redactKeyFile holds the store's key for redact, 32 random bytes, mode 0600.
const redactKeyFile = "redact.key"

// redactKey returns the store's key for redacting values in logs, making
// it on first use. Concurrent builders agree on one key: each writes a
// candidate to a temporary file and links it into place, and whoever
// loses reads the winner's. Where the store cannot be written, the key is
// this process's own.
func (c *Cache) redactKey() []byte {
	c.keyOnce.Do(func() {
		p := filepath.Join(c.dir, redactKeyFile)
		if k, err := os.ReadFile(p); err == nil && len(k) == 32 {
			c.key = k
			return
		}
		c.key = make([]byte, 32)
		rand.Read(c.key)
		if f, err := os.CreateTemp(c.dir, ".tmp-key-*"); err == nil {
			_, werr := f.Write(c.key)
			if cerr := f.Close(); werr == nil && cerr == nil {
				_ = os.Link(f.Name(), p)
			}
			os.Remove(f.Name())
		}
		if k, err := os.ReadFile(p); err == nil && len(k) == 32 {
			c.key = k
		}
	})
	return c.key
}

// loadStep reads the step index entry id.
func (c *Cache) loadStep(id string) (stepEntry, bool) {
	var e stepEntry
	dt, err := os.ReadFile(filepath.Join(c.dir, stepsDir, id+".json"))
	if err != nil || json.Unmarshal(dt, &e) != nil {
		return stepEntry{}, false
	}
	return e, true
}

// saveStep writes the step index entry id atomically; best effort.
func (c *Cache) saveStep(id string, e stepEntry) {
	dt, err := json.Marshal(e)
	if err == nil {
		_ = c.writeSmall(stepsDir, id+".json", dt)
	}
}

func sumFile(sum string) string {
	return strings.TrimPrefix(sum, "sha256:") + ".json"
}

// loadFiles reads the COPY source file list kept for a checksum.
func (c *Cache) loadFiles(sum string) (map[string]string, bool) {
	var m map[string]string
	dt, err := os.ReadFile(filepath.Join(c.dir, filesDir, sumFile(sum)))
	if err != nil || json.Unmarshal(dt, &m) != nil {
		return nil, false
	}
	return m, true
}

// saveFiles keeps the file list of a COPY source checksum unless it is
// there already (the same checksum means the same files); best effort.
func (c *Cache) saveFiles(sum string, files map[string]string) {
	p := filepath.Join(c.dir, filesDir, sumFile(sum))
	if _, err := os.Stat(p); err == nil {
		return
	}
	dt, err := json.Marshal(files)
	if err == nil {
		_ = c.writeSmall(filesDir, sumFile(sum), dt)
	}
}

// writeSmall writes dir/name below the cache directory atomically.
func (c *Cache) writeSmall(dir, name string, dt []byte) error {
	d := filepath.Join(c.dir, dir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(d, name), dt, 0o600)
}

package build

import (
	"context"
	"encoding/json"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/patternmatcher"

	"builder/build/cache"
	"builder/build/copier"
	"builder/build/progress"
	"builder/parser"
)

// This file is the build's side of --explain-cache: which Dockerfile step
// a key belongs to, the files a COPY from the context reads, and when to
// print. The cache package keeps the step index and the file lists, and
// says why a step missed.

// stepID names a Dockerfile step across builds (see cache.StepID).
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
	return cache.StepID(df, st.index, pos, op)
}

// explain keeps the step index up to date and, on a cache miss with
// --explain-cache, prints why the step missed: the first input that
// differs from the last build of the same Dockerfile step. files, if not
// nil, lists a COPY's source files; it is called only on a miss, and its
// result is kept under the source checksum for later explanations. sp may
// be nil (the line then goes to the build's progress). Failures to read or
// write the index are ignored: explanations are advisory and never fail a
// build. It returns the key of the last build of the step ("" if
// none), which names the layer a new one may reuse (see previousLayer).
func (j *job) explain(ctx context.Context, sp *progress.Step, st *stageState, step *parser.Step, key cache.Key, preimage []byte, files func() map[string]string, hit bool) cache.Key {
	var cur cache.Preimage
	if json.Unmarshal(preimage, &cur) != nil {
		return ""
	}
	id := j.stepID(st, step, cur.Op)
	prev, havePrev := j.b.cache.LastStep(id)
	if !hit {
		var curFiles map[string]string
		if files != nil && cur.Inputs["sources"] != "" {
			curFiles = files()
			if curFiles != nil {
				j.b.cache.SaveFiles(cur.Inputs["sources"], curFiles)
			}
		}
		if j.o.ExplainCache {
			reason := "--no-cache is set"
			if j.noCacheStage(st.index) {
				reason = "--no-cache-filter names this stage"
			}
			if !j.o.NoCache && !j.noCacheStage(st.index) {
				var p *cache.Step
				if havePrev {
					p = &prev
				}
				reason = j.b.cache.Explain(p, cache.Miss{Text: step.Original, Preimage: cur, Files: curFiles,
					IsArg: func(k string) bool { _, ok := st.args.Get(k); return ok }})
			}
			line := "cache miss: " + reason
			if sp != nil {
				sp.Note(line)
			} else {
				j.progress.Printf("%s: %s", historyText(step.Original), line)
			}
		}
	}
	if !havePrev || prev.Key != key || prev.Text != step.Original {
		j.b.cache.SaveStep(id, cache.Step{Key: key, Text: step.Original, Preimage: preimage})
	}
	if !havePrev {
		return ""
	}
	return prev.Key
}

// contextFiles returns a function listing the files a COPY from the build
// context reads, for explanations: each path (relative to the context)
// as cache.DescribeFile describes it. It follows copier's selection
// closely but not exactly (it globs with path.Match rules and applies
// .dockerignore and --exclude); it reads only. It returns nil for other
// sources.
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
		// The checksum has just read the files into the stat cache: their
		// digests are taken from it rather than read a second time.
		known := func(rel string) func(fs.FileInfo) ([]byte, bool) {
			return func(fi fs.FileInfo) ([]byte, bool) {
				sum, ok := cs.src.Hashes.Sum(rel, fi)
				return sum[:], ok
			}
		}
		out := map[string]string{}
		root := cs.src.Root
		for _, s := range req.Sources {
			rel := strings.TrimPrefix(path.Clean("/"+s), "/")
			matches, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(rel)))
			for _, m := range matches {
				_ = filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
					if err != nil || len(out) >= cache.MaxListedFiles {
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
					out[r] = cache.DescribeFileWith(p, d, known(r))
					return nil
				})
			}
		}
		return out
	}
}

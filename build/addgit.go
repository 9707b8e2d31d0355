package build

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"builder/build/cache"
	"builder/build/copier"
	"builder/build/gitsrc"
	"builder/build/progress"
	"builder/parser"
	"builder/snapshot"
)

// addGit executes ADD of a Git repository (src, expanded) to dest, as
// BuildKit does: the ref is resolved to a commit on the remote (git
// ls-remote), which keys the step, so a cache hit clones nothing; on a
// miss the commit is cloned with build/gitsrc into the store's tmp
// directory and its tree (the subdirectory the URL names) copied to dest,
// without .git unless --keep-git-dir. --checksum must match the commit
// (or the annotated tag).
func (j *job) addGit(ctx context.Context, st *stageState, step *parser.Step, op *parser.Copy, sp *progress.Step, src, dest, chown, chmod string) (bool, error) {
	r, err := gitsrc.Parse(src)
	if err != nil {
		return false, err
	}
	r.KeepGitDir = r.KeepGitDir || op.KeepGitDir
	if op.Checksum != "" {
		c, err := st.expander().word(op.Checksum)
		if err != nil {
			return false, err
		}
		if r.Checksum != "" && r.Checksum != c {
			return false, fmt.Errorf("checksum %s conflicts with the URL's %s", c, r.Checksum)
		}
		r.Checksum = c
	}
	tmp, err := j.tempDir("git-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	o, done, err := j.gitOptions(tmp)
	if err != nil {
		return false, err
	}
	defer done.Close()
	commit, err := gitsrc.Resolve(ctx, r, o)
	if err != nil {
		return false, err
	}
	j.rec.noteGit(gitProvenanceURI(r), commit)
	pre := cache.Preimage{Parent: string(st.fsKey), Op: "add-git", Args: []string{dest},
		State:  map[string]string{"chown": chown, "chmod": chmod, "keep-git-dir": strconv.FormatBool(r.KeepGitDir)},
		Inputs: map[string]string{"git": gitsrc.Redact(r.Remote) + "#" + commit + ":" + r.Subdir}}
	j.addEpoch(&pre)
	key, preimage := pre.Key()
	req := copier.Request{Sources: []string{"."}, Dest: dest, Chmod: chmod}
	call := fsCall{step: step, sp: sp, key: key, preimage: preimage, kind: "copy", createdBy: historyText(step.Original)}
	return j.fsStep(ctx, st, call, func(mounts []snapshot.Mount) error {
		co, err := gitsrc.Fetch(ctx, r, o)
		if err != nil {
			return err
		}
		defer co.Close()
		if co.Commit != commit {
			return fmt.Errorf("git source %s: the ref moved from commit %s to %s during the build", r, commit, co.Commit)
		}
		cs := copySource{src: copier.Source{Root: co.Dir}}
		return j.withSource(ctx, cs, mounts, func(src copier.Source, dstRoot string) error {
			if err := setChown(&req, dstRoot, chown); err != nil {
				return err
			}
			return copier.Copy(ctx, src, dstRoot, req)
		})
	})
}

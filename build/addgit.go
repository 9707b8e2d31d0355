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
// BuildKit does: the ref is cloned with build/gitsrc into the store's tmp
// directory and its tree (the subdirectory the URL names) copied to dest,
// without .git unless --keep-git-dir. The cache key is the commit, not the
// time of the clone; --checksum must be that commit.
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
	co, err := gitsrc.Fetch(ctx, r, o)
	done.Close()
	if err != nil {
		return false, err
	}
	defer co.Close()
	pre := cache.Preimage{Parent: string(st.fsKey), Op: "add-git", Args: []string{dest},
		State:  map[string]string{"chown": chown, "chmod": chmod, "keep-git-dir": strconv.FormatBool(r.KeepGitDir)},
		Inputs: map[string]string{"git": gitsrc.Redact(r.Remote) + "#" + co.Commit + ":" + r.Subdir}}
	j.addEpoch(&pre)
	key, preimage := pre.Key()
	req := copier.Request{Sources: []string{"."}, Dest: dest, Chmod: chmod}
	call := fsCall{step: step, sp: sp, key: key, preimage: preimage, kind: "copy", createdBy: historyText(step.Original)}
	return j.fsStep(ctx, st, call, func(mounts []snapshot.Mount) error {
		cs := copySource{src: copier.Source{Root: co.Dir}}
		return j.withSource(ctx, cs, mounts, func(src copier.Source, dstRoot string) error {
			if err := setChown(&req, dstRoot, chown); err != nil {
				return err
			}
			return copier.Copy(ctx, src, dstRoot, req)
		})
	})
}

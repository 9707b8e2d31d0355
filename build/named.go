package build

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/cache"
	"builder/build/copier"
	"builder/build/fetch"
	"builder/build/gitsrc"
	"builder/build/namedctx"
	"builder/build/sshagent"
	"builder/parser"
	"builder/snapshot"
)

// namedState holds what the build resolved of its named contexts: each
// directory loaded and each OCI layout imported once per build.
type namedState struct {
	mu      sync.Mutex
	dirs    map[string]*copier.Context
	layouts map[string]v1.Hash
	temps   []string // downloaded contexts, removed after the build
}

// named returns the --build-context that ref (a stage or image name)
// resolves to, if any.
func (j *job) named(ref string) (namedctx.Context, bool) {
	if len(j.o.NamedContexts) == 0 {
		return namedctx.Context{}, false
	}
	key, ok := namedctx.Normalize(ref)
	if !ok {
		return namedctx.Context{}, false
	}
	c, ok := j.o.NamedContexts[key]
	return c, ok
}

// isDir reports whether a named context is a tree of files rather than an
// image.
func isDir(c namedctx.Context) bool {
	return c.Kind == namedctx.Local || c.Kind == namedctx.URL || c.Kind == namedctx.Git
}

// namedDir returns the file tree of a directory-like named context: a
// local directory with its own .dockerignore, or a downloaded URL as the
// single file "context", as BuildKit gives it.
func (j *job) namedDir(ctx context.Context, c namedctx.Context) (*copier.Context, error) {
	j.nctx.mu.Lock()
	defer j.nctx.mu.Unlock()
	if bc, ok := j.nctx.dirs[c.Key]; ok {
		return bc, nil
	}
	var bc *copier.Context
	var err error
	switch c.Kind {
	case namedctx.Local:
		bc, err = copier.LoadContext(c.Path, "")
	case namedctx.URL:
		var dir string
		if dir, err = j.tempDir("context-url-"); err != nil {
			return nil, err
		}
		j.nctx.temps = append(j.nctx.temps, dir)
		if _, err = fetch.Download(ctx, http.DefaultClient, c.Ref, filepath.Join(dir, "context"), ""); err == nil {
			bc, err = copier.LoadContext(dir, "")
		}
	case namedctx.Git:
		bc, err = j.namedGit(ctx, c)
	default:
		err = fmt.Errorf("%s is not a directory context", c.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", c.Name, err)
	}
	if j.nctx.dirs == nil {
		j.nctx.dirs = map[string]*copier.Context{}
	}
	j.nctx.dirs[c.Key] = bc
	return bc, nil
}

// namedGit clones a git named context (with the default ssh agent for ssh
// remotes); the checkout is removed after the build. As in BuildKit, its
// .dockerignore does not apply.
func (j *job) namedGit(ctx context.Context, c namedctx.Context) (*copier.Context, error) {
	r, err := gitsrc.Parse(c.Ref)
	if err != nil {
		return nil, err
	}
	tmp, err := j.tempDir("context-git-")
	if err != nil {
		return nil, err
	}
	j.nctx.temps = append(j.nctx.temps, tmp)
	o, done, err := j.gitOptions(tmp)
	if err != nil {
		return nil, err
	}
	defer done.Close()
	co, err := gitsrc.Fetch(ctx, r, o)
	if err != nil {
		return nil, err
	}
	j.progress.Printf("build context %s: %s (commit %s)", c.Name, r, co.Commit)
	return &copier.Context{Dir: co.Dir}, nil
}

// gitOptions are the options of a git fetch into tmp: git reaches ssh
// remotes through the build's default ssh agent, if --ssh gave one. Close
// the Closer when the fetch is done.
func (j *job) gitOptions(tmp string) (gitsrc.Options, io.Closer, error) {
	o := gitsrc.Options{TempDir: tmp}
	a, ok := j.o.SSH[sshagent.DefaultID]
	if !ok {
		return o, noAgent{}, nil
	}
	env, done, err := a.GitEnv(tmp)
	if err != nil {
		return o, nil, fmt.Errorf("serve the ssh agent to git: %w", err)
	}
	o.Env = env
	return o, done, nil
}

// noAgent is the Closer of gitOptions without an agent.
type noAgent struct{}

func (noAgent) Close() error { return nil }

// namedDirFor returns the file tree of the directory-like named context
// that from names in stage st, if it names one and no earlier stage:
// COPY --from and RUN --mount from= read such a context in place.
func (j *job) namedDirFor(ctx context.Context, st *stageState, from string) (*copier.Context, bool, error) {
	if _, ok := j.stageRef(from, st.index); ok {
		return nil, false, nil
	}
	c, ok := j.named(from)
	if !ok || !isDir(c) {
		return nil, false, nil
	}
	bc, err := j.namedDir(ctx, c)
	return bc, true, err
}

// namedImage returns the image of an image named context: pulled (or
// found in the store) for docker-image://, imported from the layout for
// oci-layout://.
func (j *job) namedImage(ctx context.Context, c namedctx.Context, platform v1.Platform) (*baseImage, error) {
	if c.Kind == namedctx.Image {
		return j.image(ctx, c.Ref, platform)
	}
	j.nctx.mu.Lock()
	defer j.nctx.mu.Unlock()
	dgst, ok := j.nctx.layouts[c.Key]
	if !ok {
		var err error
		if dgst, err = namedctx.ImportLayout(ctx, j.b.store, c, platform); err != nil {
			return nil, fmt.Errorf("build context %s: %w", c.Name, err)
		}
		if j.nctx.layouts == nil {
			j.nctx.layouts = map[string]v1.Hash{}
		}
		j.nctx.layouts[c.Key] = dgst
		j.progress.Printf("build context %s: %s", c.Name, dgst)
	}
	img, err := j.b.loadBase(dgst)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", c.Name, err)
	}
	return img, nil
}

// namedStageState makes the starting state of a stage from a named
// context: the image's, or an empty image whose one layer holds the
// directory's files (a cached step like any COPY). pos places the step
// in errors and cache explanations.
func (j *job) namedStageState(ctx context.Context, c namedctx.Context, platform v1.Platform, pos *parser.Step) (*stageState, error) {
	if c.Kind == namedctx.Image && c.Ref == "scratch" {
		return scratchState(platform), nil // as BuildKit: docker-image://scratch is the empty image
	}
	if !isDir(c) {
		img, err := j.namedImage(ctx, c, platform)
		if err != nil {
			return nil, err
		}
		return stateFromImage(img)
	}
	bc, err := j.namedDir(ctx, c)
	if err != nil {
		return nil, err
	}
	st := scratchState(platform)
	src := bc.Source()
	req := copier.Request{Sources: []string{"/"}, Dest: "/"}
	sum, err := copier.Checksum(ctx, src, req)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", c.Name, err)
	}
	pre := cache.Preimage{Parent: string(st.fsKey), Op: "context", State: map[string]string{},
		Inputs: map[string]string{"sources": sum}}
	j.addEpoch(&pre)
	key, preimage := pre.Key()
	call := fsCall{step: pos, key: key, preimage: preimage, kind: "copy", createdBy: "FROM " + c.Name + " (build context)"}
	_, err = j.fsStep(ctx, st, call, func(mounts []snapshot.Mount) error {
		return j.withMounts(ctx, [][]snapshot.Mount{mounts}, func(roots []string) error {
			return copier.Copy(ctx, src, roots[0], req)
		})
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// cleanupNamed removes the contexts the build downloaded.
func (j *job) cleanupNamed() {
	j.nctx.mu.Lock()
	defer j.nctx.mu.Unlock()
	for _, d := range j.nctx.temps {
		os.RemoveAll(d)
	}
	j.nctx.temps = nil
}

package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"

	"builder/build"
	"builder/build/attest"
	"builder/build/buildctx"
	"builder/build/gitsrc"
	"builder/build/sshagent"
	"builder/build/store"
)

// checkContextArg fails early, as a usage error, for a CONTEXT argument
// that is a local path but not a directory.
func checkContextArg(arg string) error {
	if arg == buildctx.Stdin || buildctx.IsRemote(arg) {
		return nil
	}
	if st, err := os.Stat(arg); err != nil || !st.IsDir() {
		return usagef("build context %q is not a directory (or -, a Git URL or an http(s) URL)", arg)
	}
	return nil
}

// resolveContext fetches or unpacks the context of o (stdin, Git, URL)
// and the Dockerfile file names (-f, "-" for stdin) into the store's
// tmp directory, and points o at them. The caller closes the result.
func resolveContext(ctx context.Context, g *globals, o *build.Options, file string) (*buildctx.Context, error) {
	tmp := filepath.Join(g.root, store.TempDir)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	keep, _ := strconv.ParseBool(o.BuildArgs["BUILDKIT_CONTEXT_KEEP_GIT_DIR"])
	spec := buildctx.Spec{Context: o.ContextDir, Dockerfile: file, Stdin: os.Stdin, TempDir: tmp, KeepGitDir: keep}
	if a, ok := o.SSH[sshagent.DefaultID]; ok && gitsrc.IsGit(o.ContextDir) {
		// A Git context over ssh uses the build's default agent, as in BuildKit.
		env, done, err := a.GitEnv(tmp)
		if err != nil {
			return nil, err
		}
		defer done.Close()
		spec.Git.Env = env
	}
	c, err := buildctx.Resolve(ctx, spec)
	if err != nil {
		return nil, err
	}
	o.ContextDir, o.Dockerfile, o.TemporaryContext = c.Dir, c.Dockerfile, c.Temporary
	if c.GitCommit != "" {
		o.GitContext = &attest.GitSource{URL: c.GitURL, Commit: c.GitCommit}
	}
	if c.Source != "" {
		o.Progress.Printf("context: %s", c.Source)
	}
	return c, nil
}

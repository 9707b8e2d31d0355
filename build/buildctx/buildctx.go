// Package buildctx turns the CONTEXT argument and -f of `builder build`
// into a context directory and a Dockerfile path, as docker build and
// buildx resolve them: a local directory; "-" for a tar archive on stdin
// (plain, gzip, bzip2, xz or zstd) or a bare Dockerfile on stdin with an
// empty context; a Git URL (cloned with build/gitsrc); an http(s) URL of
// a tarball, or of a plain Dockerfile; and -f - for a Dockerfile on stdin.
//
// Everything it fetches or unpacks goes into a temporary directory under
// the caller's TempDir, which Close removes; archives are unpacked by
// snapshot/archive, which writes nothing outside the directory whatever
// the entries say. For a remote or stdin context, -f names a file inside
// the context, resolved inside it.
package buildctx

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/util/archiveutil"

	"builder/build/copier"
	"builder/build/fetch"
	"builder/build/gitsrc"
	"builder/snapshot/archive"
)

// Stdin is the CONTEXT argument and -f value that mean standard input.
const Stdin = "-"

// MaxDockerfile bounds a Dockerfile read from stdin or a URL.
const MaxDockerfile = 16 << 20

// Spec is what the command line says about the context.
type Spec struct {
	// Context is the CONTEXT argument.
	Context string
	// Dockerfile is the -f value, "" for the default.
	Dockerfile string
	// Stdin is read for "-" (as the context or the Dockerfile).
	Stdin io.Reader
	// TempDir is where fetched and unpacked contexts go (it must exist),
	// e.g. the store's tmp directory.
	TempDir string
	// HTTP fetches http(s) contexts.
	HTTP *http.Client
	// Git tunes the clone of a Git context (its TempDir is TempDir).
	Git gitsrc.Options
	// KeepGitDir keeps .git in a Git context (the build arg
	// BUILDKIT_CONTEXT_KEEP_GIT_DIR).
	KeepGitDir bool
}

// Context is a resolved build context.
type Context struct {
	// Dir is the context directory.
	Dir string
	// Dockerfile is the host path of the Dockerfile.
	Dockerfile string
	// Temporary is true when Dir was made for this build (and so is not
	// worth a stat cache).
	Temporary bool
	// Source describes a remote context for messages ("" for local):
	// the URL, passwords redacted, and for Git the commit.
	Source string
	// GitURL and GitCommit name a Git context for provenance: the
	// repository URL (credentials redacted) with its #ref, and the commit
	// checked out; both "" for other contexts.
	GitURL, GitCommit string
	tmp               string
	git               *gitsrc.Checkout
}

// Close removes what Resolve fetched or unpacked. It is idempotent.
func (c *Context) Close() error {
	var err error
	if c.git != nil {
		err = c.git.Close()
		c.git = nil
	}
	if c.tmp != "" {
		err = errors.Join(err, os.RemoveAll(c.tmp))
		c.tmp = ""
	}
	return err
}

// IsRemote reports whether the CONTEXT argument s names a remote context
// (Git or http(s)) rather than a directory.
func IsRemote(s string) bool {
	return gitsrc.IsGit(s) || fetch.IsHTTP(s)
}

// Resolve makes the context s names available as a directory. The caller
// must Close the result.
func Resolve(ctx context.Context, s Spec) (_ *Context, err error) {
	if s.Context == Stdin && s.Dockerfile == Stdin {
		return nil, errors.New("the build context and the Dockerfile cannot both come from stdin (-f - with CONTEXT -)")
	}
	c := &Context{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if s.Context != Stdin && !IsRemote(s.Context) {
		return c, c.local(s)
	}
	c.Temporary = true
	if c.tmp, err = os.MkdirTemp(s.TempDir, "context-"); err != nil {
		return nil, err
	}
	var stdinDockerfile bool
	switch {
	case s.Context == Stdin:
		stdinDockerfile, err = c.fromStream(s.Stdin, "stdin")
	case gitsrc.IsGit(s.Context):
		err = c.fromGit(ctx, s)
	default:
		stdinDockerfile, err = c.fromURL(ctx, s)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case stdinDockerfile && s.Context == Stdin && s.Dockerfile != "" && s.Dockerfile != Stdin:
		// buildx: "ambiguous Dockerfile source".
		return nil, fmt.Errorf("-f %s: the Dockerfile is the context itself (%s)", s.Dockerfile, c.describe(s))
	case stdinDockerfile:
		// A URL that serves a Dockerfile is the Dockerfile, whatever -f
		// names (BuildKit ignores the filename: testHTTPDockerfile).
	case s.Dockerfile == Stdin:
		c.Dockerfile, err = c.stdinDockerfile(s.Stdin)
	default:
		if c.Dockerfile, err = inside(c.Dir, s.Dockerfile); err == nil {
			if _, serr := os.Stat(c.Dockerfile); serr != nil {
				name := s.Dockerfile
				if name == "" {
					name = "Dockerfile"
				}
				err = fmt.Errorf("no Dockerfile %q in the build context (%s)", name, c.describe(s))
			}
		}
	}
	return c, err
}

func (c *Context) describe(s Spec) string {
	if s.Context == Stdin {
		return "stdin"
	}
	return c.Source
}

// local resolves a context directory; -f is a host path relative to the
// working directory, as docker build has it.
func (c *Context) local(s Spec) error {
	if st, err := os.Stat(s.Context); err != nil || !st.IsDir() {
		return fmt.Errorf("build context %q is not a directory", s.Context)
	}
	c.Dir = s.Context
	switch s.Dockerfile {
	case "":
		c.Dockerfile = defaultDockerfile(s.Context)
	case Stdin:
		var err error
		if c.tmp, err = os.MkdirTemp(s.TempDir, "context-"); err != nil {
			return err
		}
		c.Dockerfile, err = c.stdinDockerfile(s.Stdin)
		return err
	default:
		c.Dockerfile = s.Dockerfile
	}
	return nil
}

// stdinDockerfile writes the Dockerfile on stdin into the temporary
// directory and returns its path.
func (c *Context) stdinDockerfile(r io.Reader) (string, error) {
	p := filepath.Join(c.tmp, "Dockerfile")
	if err := writeLimited(p, r, MaxDockerfile); err != nil {
		return "", fmt.Errorf("read the Dockerfile from stdin: %w", err)
	}
	return p, nil
}

// fromStream makes the context from r: an archive is unpacked into the
// context directory; anything else is a Dockerfile, with an empty context,
// which fromStream reports.
func (c *Context) fromStream(r io.Reader, what string) (dockerfile bool, err error) {
	c.Dir = filepath.Join(c.tmp, "context")
	if err := os.Mkdir(c.Dir, 0o755); err != nil {
		return false, err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read %s: %w", what, err)
	}
	if !archiveutil.IsArchive(head) {
		p := filepath.Join(c.tmp, "Dockerfile")
		if err := writeLimited(p, br, MaxDockerfile); err != nil {
			return false, fmt.Errorf("read the Dockerfile from %s: %w", what, err)
		}
		c.Dockerfile = p
		return true, nil
	}
	dr, err := copier.Decompress(br)
	if err != nil {
		return false, fmt.Errorf("unpack the context from %s: %w", what, err)
	}
	defer dr.Close()
	if _, err := archive.Apply(c.Dir, dr); err != nil {
		return false, fmt.Errorf("unpack the context from %s: %w", what, err)
	}
	return false, nil
}

// fromGit clones a Git context.
func (c *Context) fromGit(ctx context.Context, s Spec) error {
	r, err := gitsrc.Parse(s.Context)
	if err != nil {
		return err
	}
	r.KeepGitDir = r.KeepGitDir || s.KeepGitDir
	o := s.Git
	o.TempDir = c.tmp
	if c.git, err = gitsrc.Fetch(ctx, r, o); err != nil {
		return err
	}
	c.Dir = c.git.Dir
	c.Source = r.String() + " (commit " + c.git.Commit + ")"
	c.GitURL, c.GitCommit = gitsrc.Redact(r.Remote), c.git.Commit
	if r.Ref != "" {
		c.GitURL += "#" + r.Ref
	}
	return nil
}

// fromURL downloads an http(s) context: a tarball, or a Dockerfile.
func (c *Context) fromURL(ctx context.Context, s Spec) (bool, error) {
	c.Source = gitsrc.Redact(s.Context)
	client := s.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	p := filepath.Join(c.tmp, "download")
	if _, err := fetch.Download(ctx, client, s.Context, p, ""); err != nil {
		return false, fmt.Errorf("build context: %w", err)
	}
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return c.fromStream(f, c.Source)
}

// inside resolves the Dockerfile path name inside the context dir (""
// for "Dockerfile"): absolute paths and symlinks stay in dir.
func inside(dir, name string) (string, error) {
	if name == "" {
		return defaultDockerfile(dir), nil
	}
	p, err := securejoin.SecureJoin(dir, name)
	if err != nil {
		return "", fmt.Errorf("-f %s: %w", name, err)
	}
	return p, nil
}

// defaultDockerfile is the Dockerfile of a context when -f is not given:
// "Dockerfile", or "dockerfile" when only that exists (as docker build and
// BuildKit fall back).
func defaultDockerfile(dir string) string {
	p := filepath.Join(dir, "Dockerfile")
	if _, err := os.Lstat(p); err != nil {
		if lower := filepath.Join(dir, "dockerfile"); fileExists(lower) {
			return lower
		}
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// writeLimited copies r into the new file p, failing if r holds more
// than limit bytes.
func writeLimited(p string, r io.Reader, limit int64) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > limit {
		err = fmt.Errorf("larger than %d MiB", limit>>20)
	}
	if err != nil {
		os.Remove(p)
	}
	return err
}

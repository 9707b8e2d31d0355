// Package gitsrc fetches Git sources, for remote build contexts and ADD of
// a repository, as BuildKit does: it parses the reference with BuildKit's
// own parser (remote, ref, subdirectory and query options), clones the one
// commit asked for with the git binary into a temporary directory (a
// shallow fetch by ref; a commit sha the server will not serve alone falls
// back to a full fetch), checks out submodules, drops .git unless asked to
// keep it, and sets every file's mtime to the commit's time so that the
// same commit always gives the same files.
//
// git runs with no system or user configuration, no hooks, no terminal
// prompt, and only the http, https, git and ssh transports (so neither a
// submodule nor a crafted URL can read the host's files through file:// or
// run a command through ext::). A Checkout is removed by Close; Fetch
// removes everything it made when it fails.
package gitsrc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/frontend/dockerfile/dfgitutil"
	"github.com/moby/buildkit/util/gitutil"
	"golang.org/x/sys/unix"
)

// ErrNoGit is returned by Fetch when the git binary is not in PATH.
var ErrNoGit = errors.New("the git binary is not installed (needed for Git sources)")

// maxRef bounds the length of a ref, so that a hostile value cannot make
// a huge command line.
const maxRef = 1024

// Ref is a parsed Git source.
type Ref struct {
	// Remote is the repository URL without the fragment and query.
	Remote string
	// Ref is the branch, tag, other ref or commit sha; "" for the
	// remote's default branch.
	Ref string
	// Subdir is the directory of the repository the source is, clean and
	// relative; "" for the root.
	Subdir string
	// Checksum is the commit the ref must resolve to, or the annotated
	// tag it names, in full or a prefix of at least 7 hex digits, as
	// BuildKit compares it ("?checksum=" or ADD --checksum); "" for any.
	Checksum string
	// KeepGitDir keeps the .git directory in the checkout.
	KeepGitDir bool
	// NoSubmodules skips checking out submodules ("?submodules=false").
	NoSubmodules bool
}

// IsGit reports whether s is a Git source as BuildKit recognises one: a
// git://, ssh:// or git@host: URL, or an http(s) URL whose path ends in .git.
func IsGit(s string) bool {
	_, ok, err := dfgitutil.ParseGitRef(s)
	return ok && err == nil && !strings.HasPrefix(s, "github.com/")
}

// Parse parses a Git source "URL#ref:subdir" (or with BuildKit's query
// form, "URL?ref=R&subdir=S&keep-git-dir=true"). Local paths and file://
// URLs are refused, as BuildKit refuses them, and so is a ref or URL that
// git could take for an option.
func Parse(s string) (Ref, error) {
	g, ok, err := dfgitutil.ParseGitRef(s)
	if !ok || err != nil || strings.HasPrefix(s, "github.com/") {
		if err == nil {
			err = errors.New("not a Git URL")
		}
		return Ref{}, fmt.Errorf("invalid Git source %q: %w", Redact(s), err)
	}
	r := Ref{Remote: g.Remote, Ref: g.Ref, Subdir: g.SubDir, Checksum: g.Checksum}
	if g.KeepGitDir != nil {
		r.KeepGitDir = *g.KeepGitDir
	}
	if g.Submodules != nil {
		r.NoSubmodules = !*g.Submodules
	}
	if err := r.check(); err != nil {
		return Ref{}, fmt.Errorf("invalid Git source %q: %w", Redact(s), err)
	}
	return r, nil
}

// check refuses values that git could read as options or that are not
// refs at all.
func (r Ref) check() error {
	if strings.HasPrefix(r.Remote, "-") {
		return errors.New("the URL starts with '-'")
	}
	if len(r.Ref) > maxRef {
		return fmt.Errorf("the ref is longer than %d bytes", maxRef)
	}
	if strings.HasPrefix(r.Ref, "-") {
		return fmt.Errorf("the ref %q starts with '-'", r.Ref)
	}
	for _, c := range r.Ref + r.Subdir {
		if c < 0x20 || c == 0x7f {
			return errors.New("control character in the ref or subdirectory")
		}
	}
	if c := r.Checksum; c != "" && (len(c) < 7 || len(c) > 64 || strings.Trim(c, "0123456789abcdef") != "") {
		return fmt.Errorf("checksum %q is not a commit sha", r.Checksum)
	}
	return nil
}

// String is the source as "URL#ref:subdir", with any password in the URL
// redacted.
func (r Ref) String() string {
	s := Redact(r.Remote)
	if r.Ref != "" || r.Subdir != "" {
		s += "#" + r.Ref
	}
	if r.Subdir != "" {
		s += ":" + r.Subdir
	}
	return s
}

// Redact hides the password or token of a URL for messages and keys.
func Redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil && (u.Scheme == "http" || u.Scheme == "https") {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
		u.User = url.User("xxxxx")
		return u.String()
	}
	return s
}

// LookGit returns the path of the git binary, or ErrNoGit: a check that
// can run before a build starts.
func LookGit() (string, error) {
	bin, err := exec.LookPath("git")
	if err != nil {
		return "", ErrNoGit
	}
	return bin, nil
}

// Options tune Fetch.
type Options struct {
	// TempDir is where the checkout is made (it must exist), e.g. the
	// store's tmp directory; "" for the system's.
	TempDir string
	// Env is added to git's environment, e.g. SSH_AUTH_SOCK or
	// GIT_SSH_COMMAND for git@ and ssh:// remotes. git gets no other
	// variable of the caller's environment but PATH and the proxies.
	Env []string
}

// Checkout is a fetched Git source on disk.
type Checkout struct {
	// Root is the top of the work tree.
	Root string
	// Dir is Root's subdirectory the source named (Root itself for none),
	// resolved inside Root: symlinks cannot lead it out.
	Dir string
	// Commit is the sha of the checked-out commit.
	Commit string
	// Time is the commit's committer time; every file has it as mtime.
	Time time.Time
	tmp  string
}

// Close removes the checkout. It is idempotent.
func (c *Checkout) Close() error {
	if c == nil || c.tmp == "" {
		return nil
	}
	err := os.RemoveAll(c.tmp)
	c.tmp = ""
	return err
}

// Fetch clones the commit r names into a new temporary directory under
// o.TempDir and checks it out. Errors name the source (its password
// redacted) and carry git's own message on one line.
func Fetch(ctx context.Context, r Ref, o Options) (*Checkout, error) {
	co, err := fetch(ctx, r, o)
	if err != nil {
		return nil, fmt.Errorf("git source %s: %w", r, err)
	}
	return co, nil
}

func fetch(ctx context.Context, r Ref, o Options) (_ *Checkout, err error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	bin, err := LookGit()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(o.TempDir, "git-")
	if err != nil {
		return nil, err
	}
	co := &Checkout{tmp: tmp, Root: filepath.Join(tmp, "checkout")}
	defer func() {
		if err != nil {
			co.Close()
		}
	}()
	if err := os.Mkdir(co.Root, 0o755); err != nil {
		return nil, err
	}
	git := gitutil.NewGitCLI(gitutil.WithGitBinary(bin), gitutil.WithDir(co.Root), gitutil.WithGitAdvice(false),
		gitutil.WithArgs("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "init.defaultBranch=main"),
		gitutil.WithExec(execWith(o.Env)))
	if _, err := git.Run(ctx, "init", "--quiet", "--template=", "--object-format="+objectFormat(ctx, git, r), "."); err != nil {
		return nil, gitError("init", err)
	}
	if _, err := git.Run(ctx, "remote", "add", "origin", r.Remote); err != nil {
		return nil, gitError("add remote", err)
	}
	var object string
	if co.Commit, object, err = fetchCommit(ctx, git, r.Ref); err != nil {
		return nil, err
	}
	if err := r.matches(co.Commit, object); err != nil {
		return nil, err
	}
	if _, err := git.Run(ctx, "checkout", "--quiet", "--detach", co.Commit); err != nil {
		return nil, gitError("checkout", err)
	}
	if !r.NoSubmodules {
		if _, err := os.Lstat(filepath.Join(co.Root, ".gitmodules")); err == nil {
			if _, err := git.Run(ctx, "submodule", "update", "--init", "--recursive", "--depth=1"); err != nil {
				return nil, gitError("update submodules", err)
			}
		}
	}
	out, err := git.Run(ctx, "show", "--no-patch", "--format=%ct", co.Commit)
	if err != nil {
		return nil, gitError("read commit time", err)
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("read commit time: %q", out)
	}
	co.Time = time.Unix(sec, 0).UTC()
	if !r.KeepGitDir {
		if err := os.RemoveAll(filepath.Join(co.Root, ".git")); err != nil {
			return nil, err
		}
	}
	if err := setTimes(co.Root, co.Time); err != nil {
		return nil, err
	}
	if co.Dir, err = securejoin.SecureJoin(co.Root, r.Subdir); err != nil {
		return nil, fmt.Errorf("subdirectory %q: %w", r.Subdir, err)
	}
	if st, err := os.Stat(co.Dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("subdirectory %q is not a directory in the repository", r.Subdir)
	}
	return co, nil
}

// objectFormat returns the object format of r's repository, "sha256" when
// the commit r names or the remote's ref has a 64-digit id, else "sha1":
// a repository must be initialized in its remote's format to fetch from
// it (BuildKit's testDockerfileFromGitSHA256). It asks the remote (git
// ls-remote) only when the ref is not a full commit id; on any failure
// it says "sha1" and leaves the error to the fetch.
func objectFormat(ctx context.Context, git *gitutil.GitCLI, r Ref) string {
	if gitutil.IsCommitSHA(r.Ref) {
		if len(r.Ref) == 64 {
			return "sha256"
		}
		return "sha1"
	}
	what := r.Ref
	if what == "" {
		what = "HEAD"
	}
	out, err := git.Run(ctx, "ls-remote", "--", r.Remote, what)
	if err != nil {
		return "sha1"
	}
	if sha, _, ok := strings.Cut(string(out), "\t"); ok && len(sha) == 64 && gitutil.IsCommitSHA(sha) {
		return "sha256"
	}
	return "sha1"
}

// fetchCommit fetches ref from origin, shallow where the server allows it,
// and returns the commit it names and the object fetched (an annotated
// tag's own sha, else the commit).
func fetchCommit(ctx context.Context, git *gitutil.GitCLI, ref string) (commit, object string, _ error) {
	if gitutil.IsCommitSHA(ref) {
		// A server serves a bare sha only if it allows it; else BuildKit
		// fetches every branch and tag and looks for the commit there.
		if _, err := git.Run(ctx, "fetch", "--depth=1", "--no-tags", "origin", ref); err == nil {
			if _, err := git.Run(ctx, "cat-file", "-e", ref+"^{commit}"); err == nil {
				return ref, ref, nil
			}
		}
		args := []string{"fetch", "--tags", "--force"}
		if _, err := os.Lstat(filepath.Join(git.Dir(), ".git", "shallow")); err == nil {
			args = append(args, "--unshallow")
		}
		if _, err := git.Run(ctx, append(args, "origin", "+refs/heads/*:refs/remotes/origin/*")...); err != nil {
			return "", "", gitError("fetch", err)
		}
		if _, err := git.Run(ctx, "cat-file", "-e", ref+"^{commit}"); err != nil {
			return "", "", fmt.Errorf("commit %s is not in the repository", ref)
		}
		return ref, ref, nil
	}
	what := ref
	if what == "" {
		what = "HEAD"
	}
	if _, err := git.Run(ctx, "fetch", "--depth=1", "--no-tags", "--force", "origin", what); err != nil {
		return "", "", gitError("fetch "+strconv.Quote(what), err)
	}
	out, err := git.Run(ctx, "rev-parse", "FETCH_HEAD", "FETCH_HEAD^{commit}")
	if err != nil {
		return "", "", gitError("resolve "+strconv.Quote(what), err)
	}
	shas := strings.Fields(string(out))
	if len(shas) != 2 || !gitutil.IsCommitSHA(shas[0]) || !gitutil.IsCommitSHA(shas[1]) {
		return "", "", fmt.Errorf("resolve %q: git printed %q", what, out)
	}
	return shas[1], shas[0], nil
}

// matches checks the resolved commit, and the annotated tag object when
// the ref is one, against r.Checksum.
func (r Ref) matches(commit, tag string) error {
	if r.Checksum == "" || strings.HasPrefix(commit, r.Checksum) || strings.HasPrefix(tag, r.Checksum) {
		return nil
	}
	return fmt.Errorf("checksum mismatch: the ref %q is commit %s, the checksum says %s", r.Ref, commit, r.Checksum)
}

// Resolve returns the commit r names on the remote without fetching it
// (git ls-remote), which is how BuildKit keys a Git source: the ref
// refs/REF, else the branch, else the tag (an annotated tag's commit).
// A full commit sha is its own answer. The checksum is checked.
func Resolve(ctx context.Context, r Ref, o Options) (string, error) {
	commit, err := resolve(ctx, r, o)
	if err != nil {
		return "", fmt.Errorf("git source %s: %w", r, err)
	}
	return commit, nil
}

func resolve(ctx context.Context, r Ref, o Options) (string, error) {
	if err := r.check(); err != nil {
		return "", err
	}
	if gitutil.IsCommitSHA(r.Ref) {
		return r.Ref, r.matches(r.Ref, "")
	}
	bin, err := LookGit()
	if err != nil {
		return "", err
	}
	// An empty directory, so that no repository's config around the
	// working directory applies.
	dir, err := os.MkdirTemp(o.TempDir, "git-ls-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	git := gitutil.NewGitCLI(gitutil.WithGitBinary(bin), gitutil.WithDir(dir), gitutil.WithExec(execWith(o.Env)))
	ref := r.Ref
	if ref == "" {
		out, err := git.Run(ctx, "ls-remote", "--symref", "--", r.Remote, "HEAD")
		if err != nil {
			return "", gitError("ls-remote", err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if target, ok := strings.CutPrefix(l, "ref: "); ok && strings.HasSuffix(target, "\tHEAD") {
				ref = strings.TrimSuffix(target, "\tHEAD")
			}
		}
		if ref == "" || strings.HasPrefix(ref, "-") {
			return "", errors.New("the remote has no default branch")
		}
	}
	out, err := git.Run(ctx, "ls-remote", "--", r.Remote, ref, ref+"^{}")
	if err != nil {
		return "", gitError("ls-remote", err)
	}
	shas := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if sha, name, ok := strings.Cut(l, "\t"); ok {
			shas[name] = sha
		}
	}
	name := strings.TrimPrefix(ref, "refs/")
	var commit, object string
	for _, cand := range []string{"refs/" + name, "refs/heads/" + strings.TrimPrefix(name, "heads/"), "refs/tags/" + strings.TrimPrefix(name, "tags/")} {
		if commit = shas[cand]; commit != "" {
			if peeled := shas[cand+"^{}"]; peeled != "" { // an annotated tag
				commit, object = peeled, commit
			}
			break
		}
	}
	if commit == "" {
		return "", fmt.Errorf("the remote has no ref %q", ref)
	}
	if !gitutil.IsCommitSHA(commit) {
		return "", fmt.Errorf("ls-remote printed %q for %q", commit, ref)
	}
	return commit, r.matches(commit, object)
}

// execWith runs git in a process group of its own, which is killed as a
// whole when ctx ends (the transports git starts hold its pipes), with
// env added to git's environment and only network transports allowed.
func execWith(env []string) func(context.Context, *exec.Cmd) error {
	return func(ctx context.Context, cmd *exec.Cmd) error {
		cmd.Env = append(cmd.Env, "GIT_ALLOW_PROTOCOL=http:https:git:ssh", "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false",
			"GIT_LFS_SKIP_SMUDGE=1")
		cmd.Env = append(cmd.Env, env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return err
		}
		done := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			case <-done:
			}
		}()
		err := cmd.Wait()
		close(done)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}
}

// gitError turns an error of gitutil (git's stderr on several lines,
// then the exit status) into one line: what was done and git's message,
// at most 512 bytes of it.
func gitError(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := err.Error()
	if _, rest, ok := strings.Cut(msg, "git stderr:\n"); ok {
		msg = rest
	}
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	msg = strings.Join(lines, " ")
	if len(msg) > 512 {
		msg = msg[:512] + "..."
	}
	return fmt.Errorf("git %s: %s", what, msg)
}

// setTimes gives every file under root the time t, symlinks included, so
// that the time of the clone leaks into no cache key or layer.
func setTimes(root string, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "set mtime", Path: p, Err: err}
		}
		return nil
	})
}

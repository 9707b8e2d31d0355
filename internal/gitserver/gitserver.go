// Package gitserver serves Git repositories on loopback for tests: the
// git:// protocol through `git daemon --inetd` (one process per
// connection) and smart HTTP through `git http-backend` behind
// net/http/cgi. Both stop when the test ends. Repo makes a repository
// with given files, commits and tags.
package gitserver

import (
	"bytes"
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"builder/internal/testenv"
)

// Server serves the bare repositories under Dir.
type Server struct {
	// Dir holds the repositories, NAME.git.
	Dir string
	// GitURL is "git://127.0.0.1:PORT", HTTPURL "http://127.0.0.1:PORT".
	GitURL, HTTPURL string
	git             string
	fetches         atomic.Int64
}

// HTTPFetches counts the fetches (not the ref listings, such as
// ls-remote's) served over HTTP so far.
func (s *Server) HTTPFetches() int64 { return s.fetches.Load() }

// isFetch reports whether an upload-pack request body asks for objects:
// a protocol v2 fetch command, or a v0 request's wants.
func isFetch(body []byte, encoding string) bool {
	if encoding == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return false
		}
		if body, err = io.ReadAll(zr); err != nil {
			return false
		}
	}
	if bytes.Contains(body, []byte("command=")) {
		return bytes.Contains(body, []byte("command=fetch"))
	}
	return bytes.Contains(body, []byte("want "))
}

// Start starts both servers over a new empty directory; they stop, and
// their processes end, when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	git := testenv.RequireTool(t, "git")
	s := &Server{Dir: t.TempDir(), git: git}
	h := &cgi.Handler{Path: git, Args: []string{"http-backend"}, Dir: s.Dir,
		Env: []string{"GIT_PROJECT_ROOT=" + s.Dir, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + s.Dir}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if isFetch(body, r.Header.Get("Content-Encoding")) {
				s.fetches.Add(1)
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	s.HTTPURL = hs.URL
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.GitURL = "git://" + ln.Addr().String()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				cmd := exec.Command(git, "daemon", "--inetd", "--export-all", "--base-path="+s.Dir, s.Dir)
				cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1", "HOME=" + s.Dir}
				cmd.Stdin, cmd.Stdout = c, c
				_ = cmd.Run()
			}()
		}
	}()
	return s
}

// Repo is a work repository whose commits Push publishes as NAME.git.
type Repo struct {
	t    testing.TB
	s    *Server
	Name string
	Dir  string // the work tree
}

// Repo creates an empty work repository that publishes as NAME.git.
func (s *Server) Repo(t testing.TB, name string) *Repo {
	t.Helper()
	r := &Repo{t: t, s: s, Name: name, Dir: t.TempDir()}
	r.Git("init", "--quiet", "-b", "main", ".")
	r.Git("config", "user.email", "test@example.invalid")
	r.Git("config", "user.name", "test")
	s.run(t, s.Dir, "init", "--quiet", "--bare", "-b", "main", name+".git")
	return r
}

// Git runs git in the work tree with a fixed date and no user config,
// and returns its trimmed output.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return r.s.run(r.t, r.Dir, args...)
}

// Commit writes files (path: content; a content starting with "->" makes
// a symlink to the rest), commits everything and returns the commit sha.
func (r *Repo) Commit(msg string, files map[string]string) string {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.Dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		os.Remove(p)
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			r.t.Fatal(err)
		}
	}
	r.Git("add", "-A")
	r.Git("commit", "--quiet", "-m", msg)
	return r.Git("rev-parse", "HEAD")
}

// Push publishes every branch and tag of the work repository.
func (r *Repo) Push() {
	r.t.Helper()
	r.Git("push", "--quiet", "--force", "--all", filepath.Join(r.s.Dir, r.Name+".git"))
	r.Git("push", "--quiet", "--force", "--tags", filepath.Join(r.s.Dir, r.Name+".git"))
}

func (s *Server) run(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(s.git, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1", "HOME=" + dir,
		"GIT_AUTHOR_DATE=2021-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2021-01-02T03:04:05Z",
		"GIT_ALLOW_PROTOCOL=file:git:http"}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(out.String())
}

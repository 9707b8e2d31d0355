package gitsrc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"builder/internal/gitserver"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ref
		err  string
	}{
		{"https://h/o/r.git#v1:sub/dir", Ref{Remote: "https://h/o/r.git", Ref: "v1", Subdir: "sub/dir"}, ""},
		{"git://h/r#main", Ref{Remote: "git://h/r", Ref: "main"}, ""},
		{"git@h:o/r.git#dev", Ref{Remote: "git@h:o/r.git", Ref: "dev"}, ""},
		{"ssh://git@h/o/r.git", Ref{Remote: "ssh://git@h/o/r.git"}, ""},
		{"https://h/r.git?ref=v2&subdir=x&keep-git-dir=true", Ref{Remote: "https://h/r.git", Ref: "v2", Subdir: "x", KeepGitDir: true}, ""},
		{"https://h/r.git#:../../etc", Ref{Remote: "https://h/r.git", Subdir: "etc"}, ""}, // BuildKit cleans it to the root
		{"https://h/r.git#--upload-pack=touch${IFS}/tmp/x", Ref{}, "starts with '-'"},
		{"https://h/r.git#" + strings.Repeat("a", maxRef+1), Ref{}, "longer than"},
		{"https://h/r.git?checksum=abc", Ref{}, "not a commit sha"},
		{"https://h/dir/", Ref{}, "invalid Git source"}, // not .git: an http context, not Git
		{"file:///etc/repo.git", Ref{}, "invalid Git source"},
		{"./repo.git", Ref{}, "invalid Git source"},
		{"/srv/repo.git", Ref{}, "invalid Git source"},
		{"ext::sh -c touch% /tmp/pwned", Ref{}, "invalid Git source"},
		{"github.com/o/r", Ref{}, "invalid Git source"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse = %+v, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse = %+v, %v; want %+v", got, err, tc.want)
			}
			if !IsGit(tc.in) {
				t.Errorf("IsGit(%q) = false", tc.in)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:secret@h/r.git": "https://user:xxxxx@h/r.git",
		"https://token@h/r.git":       "https://xxxxx@h/r.git",
		"ssh://git@h/r.git":           "ssh://git@h/r.git",
		"git@h:r.git":                 "git@h:r.git",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// fixture is a repository served over git:// and http:// with two
// commits, a branch, a lightweight and an annotated tag.
type fixture struct {
	srv            *gitserver.Server
	first, second  string // commits; "light" is a lightweight tag of second
	branch, tagged string // commits of branch "dev" and annotated tag "v1"
	tagObject      string // the annotated tag's own sha
}

func newFixture(t *testing.T) *fixture {
	srv := gitserver.Start(t)
	r := srv.Repo(t, "repo")
	f := &fixture{srv: srv}
	f.first = r.Commit("first", map[string]string{"Dockerfile": "FROM scratch\n", "sub/a.txt": "a1\n"})
	r.Git("tag", "-a", "-m", "v1", "v1")
	f.tagged = f.first
	f.second = r.Commit("second", map[string]string{"sub/a.txt": "a2\n", "sub/b.txt": "b\n",
		"out": "->/etc/passwd", "sub/up": "->../../..", "sub/abs": "->/etc", "sub/root": "->/"})
	r.Git("tag", "light")
	r.Git("checkout", "--quiet", "-b", "dev")
	f.branch = r.Commit("dev", map[string]string{"dev.txt": "dev\n"})
	r.Git("checkout", "--quiet", "main")
	r.Push()
	f.tagObject = r.Git("rev-parse", "v1")
	return f
}

func TestFetch(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	commitTime := time.Date(2021, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, base := range []string{f.srv.GitURL + "/repo.git", f.srv.HTTPURL + "/repo.git"} {
		for _, tc := range []struct {
			name, frag string
			commit     string
			files      map[string]string // relative to Dir; "" = must not exist
			git        bool
			both       bool // run over git:// too
		}{
			{"default branch", "", f.second, map[string]string{"sub/a.txt": "a2\n", "dev.txt": ""}, false, true},
			{"branch", "#dev", f.branch, map[string]string{"dev.txt": "dev\n"}, false, true},
			{"annotated tag", "#v1", f.tagged, map[string]string{"sub/a.txt": "a1\n", "sub/b.txt": ""}, false, true},
			{"full ref", "#refs/heads/main", f.second, map[string]string{"sub/b.txt": "b\n"}, false, false},
			{"old commit", "#" + f.first, f.first, map[string]string{"sub/a.txt": "a1\n"}, false, true},
			{"subdir", "#main:sub", f.second, map[string]string{"a.txt": "a2\n", "Dockerfile": ""}, false, false},
			{"keep git dir", "?ref=v1&keep-git-dir=true", f.tagged, map[string]string{"Dockerfile": "FROM scratch\n"}, true, false},
		} {
			if strings.HasPrefix(base, "git:") && !tc.both {
				continue // the transport does not matter to these; HTTP runs them
			}
			t.Run(base[:4]+"/"+tc.name, func(t *testing.T) {
				tmp := t.TempDir()
				r, err := Parse(base + tc.frag)
				if err != nil {
					t.Fatal(err)
				}
				co, err := Fetch(ctx, r, Options{TempDir: tmp})
				if err != nil {
					t.Fatal(err)
				}
				if co.Commit != tc.commit {
					t.Errorf("commit %s, want %s", co.Commit, tc.commit)
				}
				for name, want := range tc.files {
					dt, err := os.ReadFile(filepath.Join(co.Dir, name))
					if want == "" {
						if err == nil {
							t.Errorf("%s exists", name)
						}
						continue
					}
					if string(dt) != want {
						t.Errorf("%s = %q, %v; want %q", name, dt, err, want)
					}
				}
				if _, err := os.Stat(filepath.Join(co.Root, ".git")); (err == nil) != tc.git {
					t.Errorf(".git present: %v, want %v", err == nil, tc.git)
				}
				err = filepath.Walk(co.Root, func(p string, fi os.FileInfo, err error) error {
					if err == nil && !fi.ModTime().Equal(commitTime) {
						t.Errorf("%s: mtime %v, want the commit's %v", p, fi.ModTime(), commitTime)
					}
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				if !co.Time.Equal(commitTime) {
					t.Errorf("Time %v", co.Time)
				}
				if err := co.Close(); err != nil {
					t.Fatal(err)
				}
				if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
					t.Errorf("Close left %v", ents)
				}
			})
		}
	}
}

// TestFetchHostile feeds Fetch what a hostile Dockerfile or remote can:
// symlinked subdirectories pointing out, option injection through the
// ref, a missing ref, a wrong checksum, a submodule on the host's file
// system. Each must fail (or stay inside) and leave nothing behind.
func TestFetchHostile(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	secret := t.TempDir()
	evil := f.srv.Repo(t, "evil")
	os.WriteFile(filepath.Join(secret, "x"), []byte("host secret"), 0o644)
	// A submodule whose URL is a path on the builder's host.
	host := f.srv.Repo(t, "host")
	host.Commit("h", map[string]string{"x": "host secret"})
	evil.Commit("base", map[string]string{"a": "a"})
	evil.Git("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", host.Dir, "mod")
	evil.Git("commit", "--quiet", "-m", "submodule")
	evil.Push()
	marker := filepath.Join(t.TempDir(), "pwned")
	repo := f.srv.GitURL + "/repo.git"
	for _, tc := range []struct {
		name, src string
		err       string
		inside    string // for successes: a path of Dir that must stay inside Root
	}{
		{"subdir symlink to /etc", repo + "#main:sub/abs", "not a directory", ""}, // /etc of the repository
		{"subdir symlink to /", repo + "#main:sub/root", "", "."},
		{"subdir symlink up", repo + "#main:sub/up", "", "."},
		{"subdir ../..", repo + "#main:../../..", "", "."},
		{"missing subdir", repo + "#main:nope", "not a directory", ""},
		{"missing ref", repo + "#nope", "couldn't find remote ref", ""},
		{"upload-pack injection", repo + "#--upload-pack=touch " + marker, "starts with '-'", ""},
		{"checksum mismatch", repo + "?ref=v1&checksum=" + f.second, "checksum mismatch", ""},
		{"absent commit", repo + "#" + strings.Repeat("0", 40), "not in the repository", ""},
		{"file submodule", f.srv.GitURL + "/evil.git", "update submodules", ""},
		{"no server", "git://127.0.0.1:1/repo.git", "git fetch", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			r, err := Parse(tc.src)
			var co *Checkout
			if err == nil {
				co, err = Fetch(ctx, r, Options{TempDir: tmp})
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error has several lines: %q", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				rel, _ := filepath.Rel(co.Root, co.Dir)
				if strings.HasPrefix(rel, "..") {
					t.Errorf("Dir %s is outside %s", co.Dir, co.Root)
				}
				co.Close()
			}
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("left %v", ents)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("git ran the injected command")
			}
		})
	}
}

func TestFetchCanceled(t *testing.T) {
	srv := gitserver.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, _ := Parse(srv.GitURL + "/repo.git")
	tmp := t.TempDir()
	if _, err := Fetch(ctx, r, Options{TempDir: tmp}); err == nil {
		t.Fatal("Fetch with a canceled context succeeded")
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
}

func TestFetchNoGit(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	r, _ := Parse("git://127.0.0.1:1/repo.git")
	if _, err := Fetch(context.Background(), r, Options{TempDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "git binary is not installed") {
		t.Fatalf("error %v", err)
	}
}

// TestFetchSubmodules checks out a submodule served by the same git
// server, and skips it with submodules=false.
func TestFetchSubmodules(t *testing.T) {
	f := newFixture(t)
	outer := f.srv.Repo(t, "outer")
	outer.Commit("base", map[string]string{"top.txt": "top\n"})
	outer.Git("submodule", "add", "--quiet", f.srv.GitURL+"/repo.git", "mod")
	outer.Git("commit", "--quiet", "-m", "submodule")
	outer.Push()
	for _, tc := range []struct {
		query string
		want  bool
	}{{"", true}, {"?submodules=false", false}} {
		r, err := Parse(f.srv.GitURL + "/outer.git" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		co, err := Fetch(context.Background(), r, Options{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		dt, err := os.ReadFile(filepath.Join(co.Dir, "mod", "sub", "a.txt"))
		if got := err == nil && string(dt) == "a2\n"; got != tc.want {
			t.Errorf("%q: submodule checked out: %v (%q, %v), want %v", tc.query, got, dt, err, tc.want)
		}
		co.Close()
	}
}

// TestResolve resolves refs with ls-remote, as BuildKit keys Git sources,
// and checks them against checksums, without fetching anything.
func TestResolve(t *testing.T) {
	f := newFixture(t)
	repo := f.srv.HTTPURL + "/repo.git"
	for _, tc := range []struct {
		frag, want, err string
	}{
		{"", f.second, ""},
		{"#main", f.second, ""},
		{"#dev", f.branch, ""},
		{"#refs/heads/dev", f.branch, ""},
		{"#v1", f.tagged, ""},
		{"#refs/tags/v1", f.tagged, ""},
		{"#light", f.second, ""},
		{"#" + f.first, f.first, ""},
		{"?ref=v1&checksum=" + f.tagged[:7], f.tagged, ""},
		{"?ref=v1&checksum=" + f.tagObject, f.tagged, ""},
		{"?ref=main&checksum=" + f.first, "", "checksum mismatch"},
		{"#nope", "", `no ref "nope"`},
	} {
		t.Run(tc.frag, func(t *testing.T) {
			r, err := Parse(repo + tc.frag)
			if err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			before := f.srv.HTTPFetches()
			got, err := Resolve(context.Background(), r, Options{TempDir: tmp})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Resolve = %s, %v; want error %q", got, err, tc.err)
				}
			} else if err != nil || got != tc.want {
				t.Fatalf("Resolve = %s, %v; want %s", got, err, tc.want)
			}
			if n := f.srv.HTTPFetches() - before; n != 0 {
				t.Errorf("Resolve fetched %d times", n)
			}
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("left %v", ents)
			}
		})
	}
	// Fetch takes the annotated tag's own sha as a checksum too.
	r, _ := Parse(repo + "?ref=v1&checksum=" + f.tagObject)
	co, err := Fetch(context.Background(), r, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	co.Close()
	if f.srv.HTTPFetches() == 0 {
		t.Error("the fetch counter did not count a fetch")
	}
}

// TestFetchCommitFallback fetches an old commit over protocol v0, where
// the server refuses a sha it does not advertise: Fetch must fall back to
// fetching the branches, as BuildKit does.
func TestFetchCommitFallback(t *testing.T) {
	f := newFixture(t)
	env := []string{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=protocol.version", "GIT_CONFIG_VALUE_0=0"}
	r, _ := Parse(f.srv.GitURL + "/repo.git#" + f.first)
	co, err := Fetch(context.Background(), r, Options{TempDir: t.TempDir(), Env: env})
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	if dt, _ := os.ReadFile(filepath.Join(co.Dir, "sub/a.txt")); co.Commit != f.first || string(dt) != "a1\n" {
		t.Errorf("commit %s, sub/a.txt %q; want %s, a1", co.Commit, dt, f.first)
	}
}

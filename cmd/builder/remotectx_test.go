package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"builder/build/buildtest"
)

// gitExcludeDockerfile is the Git half of BuildKit's
// testExcludedFilesOnCopy: the context of the conformance case copy-exclude
// added from a repository (ADD --keep-git-dir=true URL#TAG), then copied
// from that stage with the case's --exclude patterns.
const gitExcludeDockerfile = `FROM scratch AS base
ARG REPO
ARG TAG="0.1"
ADD --keep-git-dir=true ${REPO}#${TAG} /

FROM scratch as builder1
COPY --from=base --exclude=*/*.png --exclude=*/*.jpeg . /1

FROM scratch as builder2
COPY --from=base --exclude=*/*.pdf --exclude=*/*.txt . /2

FROM scratch as builder3
COPY --from=base --exclude=*.mp3 dir3/ /3/

FROM scratch as builder4
COPY --from=base --exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/

FROM scratch as builder5
COPY --from=base --exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5

FROM scratch as builder6
COPY --from=base --exclude=* dir* /6

FROM scratch
COPY --from=builder1 / /builder1
COPY --from=builder2 / /builder2
COPY --from=builder3 / /builder3
COPY --from=builder4 / /builder4
COPY --from=builder5 / /builder5
COPY --from=builder6 / /builder6
`

// gitExclude builds gitExcludeDockerfile on the copy-exclude context
// served over git's dumb HTTP and checks the files that case expects.
func gitExclude(t *testing.T, root string) {
	src := filepath.Join("..", "..", "testdata", "conformance", "copy-exclude")
	repo := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command("cp", "-a", filepath.Join(src, "context"), repo).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"init", "-q"}, {"config", "--local", "user.email", "test"}, {"config", "--local", "user.name", "test"},
		{"add", "."}, {"commit", "-q", "-m", "0.1"}, {"tag", "0.1"}, {"update-server-info"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %q: %v\n%s", args, err, out)
		}
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(repo)))
	defer srv.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(gitExcludeDockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if log, code := cli(t, "--root", root, "build", "--progress=plain", "--build-arg", "REPO="+srv.URL+"/.git", "-o", "type=local,dest="+out, dir); code != 0 {
		t.Fatalf("exit %d:\n%s", code, log)
	}
	var c struct {
		Expect struct {
			Files map[string]struct {
				Content *string
				Absent  bool
				Link    *string
				Type    string
			}
		}
	}
	dt, err := os.ReadFile(filepath.Join(src, "case.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(dt, &c); err != nil {
		t.Fatal(err)
	}
	for p, w := range c.Expect.Files {
		full := filepath.Join(out, p)
		st, err := os.Lstat(full)
		switch {
		case w.Absent:
			if err == nil {
				t.Errorf("%s exists", p)
			}
		case err != nil:
			t.Errorf("%s: %v", p, err)
		case w.Link != nil:
			if l, err := os.Readlink(full); err != nil || l != *w.Link {
				t.Errorf("%s links to %q (%v), want %q", p, l, err, *w.Link)
			}
		case w.Content != nil:
			if got, _ := os.ReadFile(full); string(got) != *w.Content {
				t.Errorf("%s = %q, want %q", p, got, *w.Content)
			}
		case w.Type == "dir" && !st.IsDir():
			t.Errorf("%s is not a directory", p)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(out, "builder6", "6")); err != nil || len(ents) > 0 {
		t.Errorf("builder6/6: %v, %v; want empty", ents, err)
	}
}

// TestCLIRemoteContextsBuildKit ports BuildKit's tests of contexts the
// daemon fetches (frontend/dockerfile/dockerfile_test.go, v0.26.2):
// testHTTPDockerfile (a Dockerfile URL; the -f name is then ignored),
// testDockerfileFromHTTP (a tarball URL, -f naming a file in it) and
// testDockerfileFromGitSHA1/SHA256 (a repository served by a plain file
// server, git's "dumb" HTTP protocol, by branch and by default branch, in
// both object formats), and the Git half of testExcludedFilesOnCopy.
// Checked on buildkitd v0.26.2 with buildctl
// --opt context=URL --opt filename=NAME.
func TestCLIRemoteContextsBuildKit(t *testing.T) {
	buildtest.RequireRoot(t)
	root := t.TempDir()
	busybox := buildtest.BusyboxRegistry(t)
	build := "FROM " + busybox + "\nRUN echo -n \"foo-contents\" > /foo\nFROM scratch\nCOPY --from=0 /foo /foo\n"
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	for _, f := range []struct{ name, body string }{{"mydockerfile", "FROM scratch\nCOPY foo bar\n"}, {"foo", "foo-contents"}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(f.body))
	}
	tw.Close()
	files := map[string][]byte{"/df": []byte(build), "/myurl": tarball.Bytes()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dt, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(dt)
	}))
	defer srv.Close()
	buildCase(t, root, nil, nil, []string{"-f", "mydockerfile", srv.URL + "/df"}, "", map[string]string{"foo": "foo-contents"})
	buildCase(t, root, nil, nil, []string{"-f", "mydockerfile", srv.URL + "/myurl"}, "", map[string]string{"bar": "foo-contents"})

	for _, format := range []string{"sha1", "sha256"} {
		t.Run("git-"+format, func(t *testing.T) {
			dir := t.TempDir()
			df := "FROM " + busybox + " AS build\nRUN echo -n fromgit > foo\nFROM scratch\nCOPY --from=build foo bar\n"
			git := func(args ...string) {
				t.Helper()
				cmd := exec.Command("git", args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("git %q: %v\n%s", args, err, out)
				}
			}
			write := func(s string) {
				if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(s), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write(df)
			git("init", "-q", "-b", "main", "--object-format="+format)
			git("config", "--local", "user.email", "test")
			git("config", "--local", "user.name", "test")
			git("add", "Dockerfile")
			git("commit", "-q", "-m", "initial")
			git("branch", "first")
			write(df + "COPY --from=build foo bar2\n")
			git("add", "Dockerfile")
			git("commit", "-q", "-m", "second")
			git("update-server-info")
			dumb := httptest.NewServer(http.FileServer(http.Dir(dir)))
			defer dumb.Close()
			buildCase(t, root, nil, nil, []string{dumb.URL + "/.git#first"}, "", map[string]string{"bar": "fromgit", "bar2": ""})
			buildCase(t, root, nil, nil, []string{dumb.URL + "/.git"}, "", map[string]string{"bar": "fromgit", "bar2": "fromgit"})
		})
	}
	t.Run("git-exclude", func(t *testing.T) { gitExclude(t, root) })
	if m := buildtest.Mounts(t, root); len(m) > 0 {
		t.Errorf("mounts left: %q", m)
	}
}

package main

import (
	"archive/tar"
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"builder/build/buildtest"
)

// TestCLIRemoteContextsBuildKit ports BuildKit's tests of contexts the
// daemon fetches (frontend/dockerfile/dockerfile_test.go, v0.26.2):
// testHTTPDockerfile (a Dockerfile URL; the -f name is then ignored),
// testDockerfileFromHTTP (a tarball URL, -f naming a file in it) and
// testDockerfileFromGitSHA1/SHA256 (a repository served by a plain file
// server, git's "dumb" HTTP protocol, by branch and by default branch, in
// both object formats). Checked on buildkitd v0.26.2 with buildctl
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
	if m := buildtest.Mounts(t, root); len(m) > 0 {
		t.Errorf("mounts left: %q", m)
	}
}

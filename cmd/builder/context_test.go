package main

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"builder/build/buildtest"
	"builder/internal/gitserver"
)

// cliWith runs builder with stdin (nil: /dev/null) and extra environment
// and returns its combined output and exit code.
func cliWith(t *testing.T, stdin []byte, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// tarEntry is one entry of a test archive: a file, or a symlink when
// link is set.
type tarEntry struct{ name, body, link string }

// makeTar writes entries as a tar archive compressed with comp ("",
// gzip, xz or zstd).
func makeTar(t *testing.T, comp string, entries []tarEntry) []byte {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg}
		if e.link != "" {
			h = &tar.Header{Name: e.name, Mode: 0o777, Linkname: e.link, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	var out bytes.Buffer
	var w io.WriteCloser
	switch comp {
	case "":
		return raw.Bytes()
	case "gzip":
		w = gzip.NewWriter(&out)
	case "xz":
		xw, err := xz.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w = xw
	case "zstd":
		zw, err := zstd.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	default:
		t.Fatalf("compression %q", comp)
	}
	w.Write(raw.Bytes())
	w.Close()
	return out.Bytes()
}

// copyAll is a Dockerfile that copies the whole context to /ctx.
const copyAll = "FROM scratch\nCOPY . /ctx/\n"

// TestCLIStdinContexts builds from a tar on stdin in every compression,
// a Dockerfile on stdin with no context, and -f - with a directory
// context, and checks the files that reach the image (-o type=local).
func TestCLIStdinContexts(t *testing.T) {
	buildtest.RequireRoot(t)
	root := t.TempDir()
	entries := []tarEntry{{name: "Dockerfile", body: copyAll}, {name: "sub/a.txt", body: "a\n"}, {name: "alt.Dockerfile", body: "FROM scratch\nCOPY sub/a.txt /alt\n"}}
	dir := writeCase(t, "unused", map[string]string{"b.txt": "b\n"})
	for _, tc := range []struct {
		name  string
		stdin []byte
		args  []string
		files map[string]string // in the output; "" = must not exist
		err   string
	}{
		{"tar", makeTar(t, "", entries), []string{"-"}, map[string]string{"ctx/sub/a.txt": "a\n"}, ""},
		{"tar.gz", makeTar(t, "gzip", entries), []string{"-"}, map[string]string{"ctx/sub/a.txt": "a\n"}, ""},
		{"tar.xz", makeTar(t, "xz", entries), []string{"-"}, map[string]string{"ctx/sub/a.txt": "a\n"}, ""},
		{"tar.zst", makeTar(t, "zstd", entries), []string{"-"}, map[string]string{"ctx/sub/a.txt": "a\n"}, ""},
		{"tar with -f", makeTar(t, "gzip", entries), []string{"-f", "alt.Dockerfile", "-"}, map[string]string{"alt": "a\n", "ctx": ""}, ""},
		{"Dockerfile", []byte("FROM scratch\nLABEL a=b\n"), []string{"-"}, nil, ""},
		{"Dockerfile has no context", []byte(copyAll + "COPY b.txt /\n"), []string{"-"}, nil, "b.txt"},
		{"-f - with a directory", []byte(copyAll), []string{"-f", "-", dir}, map[string]string{"ctx/b.txt": "b\n", "ctx/Dockerfile": "unused"}, ""},
		{"-f - with -", []byte(copyAll), []string{"-f", "-", "-"}, nil, "cannot both come from stdin"},
		{"tar without Dockerfile", makeTar(t, "", entries[1:2]), []string{"-"}, nil, "Dockerfile"},
		{"huge Dockerfile", bytes.Repeat([]byte("# comment\n"), 2<<20), []string{"-f", "-", dir}, nil, "larger than 16 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) { buildCase(t, root, tc.stdin, nil, tc.args, tc.err, tc.files) })
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) > 0 {
		t.Errorf("left in the store's tmp: %v", ents)
	}
}

// TestCLIStdinTarHostile sends archives whose entries try to leave the
// context directory: nothing may appear outside it.
func TestCLIStdinTarHostile(t *testing.T) {
	buildtest.RequireRoot(t)
	root := t.TempDir()
	target := t.TempDir()
	up := strings.Repeat("../", 30) + strings.TrimPrefix(target, "/")
	for _, tc := range []struct {
		name    string
		entries []tarEntry
	}{
		{"dotdot", []tarEntry{{name: up + "/escaped", body: "x"}}},
		{"absolute", []tarEntry{{name: target + "/escaped", body: "x"}}},
		{"through a symlink", []tarEntry{{name: "link", link: target}, {name: "link/escaped", body: "x"}}},
		{"through a dotdot symlink", []tarEntry{{name: "link", link: up}, {name: "link/escaped", body: "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := append([]tarEntry{{name: "Dockerfile", body: "FROM scratch\nLABEL x=y\n"}}, tc.entries...)
			cliWith(t, makeTar(t, "gzip", entries), nil, "--root", root, "build", "-")
			if ents, _ := os.ReadDir(target); len(ents) > 0 {
				t.Fatalf("the archive wrote outside the context: %v", ents)
			}
		})
	}
}

// TestCLIGitContexts builds from a loopback git server, over git:// and
// smart HTTP, by tag, branch, commit and subdirectory, with -f inside the
// context and BUILDKIT_CONTEXT_KEEP_GIT_DIR; a rebuild of the same commit
// is all cache hits with the same image.
func TestCLIGitContexts(t *testing.T) {
	buildtest.RequireRoot(t)
	root := t.TempDir()
	srv := gitserver.Start(t)
	repo := srv.Repo(t, "app")
	old := repo.Commit("one", map[string]string{"Dockerfile": copyAll, "v.txt": "1\n", "sub/Dockerfile": copyAll, "sub/s.txt": "s1\n",
		"docker/alt": "FROM scratch\nCOPY v.txt /alt\n", "escape": "->/etc"})
	repo.Git("tag", "v1")
	repo.Commit("two", map[string]string{"v.txt": "2\n"})
	repo.Git("checkout", "--quiet", "-b", "dev")
	repo.Commit("dev", map[string]string{"v.txt": "dev\n"})
	repo.Git("checkout", "--quiet", "main")
	repo.Push()
	for _, tc := range []struct {
		name, url string
		args      []string
		files     map[string]string
		err       string
	}{
		{"default", srv.GitURL + "/app.git", nil, map[string]string{"ctx/v.txt": "2\n", "ctx/.git": ""}, ""},
		{"tag", srv.GitURL + "/app.git#v1", nil, map[string]string{"ctx/v.txt": "1\n"}, ""},
		{"branch over http", srv.HTTPURL + "/app.git#dev", nil, map[string]string{"ctx/v.txt": "dev\n"}, ""},
		{"commit", srv.GitURL + "/app.git#" + old, nil, map[string]string{"ctx/v.txt": "1\n"}, ""},
		{"subdir", srv.HTTPURL + "/app.git#main:sub", nil, map[string]string{"ctx/s.txt": "s1\n", "ctx/v.txt": ""}, ""},
		{"-f in the repo", srv.GitURL + "/app.git", []string{"-f", "docker/alt"}, map[string]string{"alt": "2\n"}, ""},
		{"keep .git", srv.GitURL + "/app.git", []string{"--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1"}, map[string]string{"ctx/.git/HEAD": "?"}, ""},
		{"-f out of the repo", srv.GitURL + "/app.git", []string{"-f", "../../../etc/passwd"}, nil, "Dockerfile"},
		{"-f through a symlink", srv.GitURL + "/app.git", []string{"-f", "escape/passwd"}, nil, "Dockerfile"},
		{"missing ref", srv.GitURL + "/app.git#nope", nil, nil, "couldn't find remote ref"},
		{"injection", srv.GitURL + "/app.git#--upload-pack=touch${IFS}/tmp/x", nil, nil, "starts with '-'"},
		{"file URL", "file://" + repo.Dir, nil, nil, "is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) { buildCase(t, root, nil, nil, append(tc.args, tc.url), tc.err, tc.files) })
	}
	// The same commit again, cloned anew: every step from the cache, the
	// same image (the clone's file times are the commit's).
	// With --no-cache the layers are made again from a new clone and must
	// be the same bytes. SOURCE_DATE_EPOCH (later than every file time, so
	// it clamps none) fixes the config's creation time.
	build := func(flags ...string) string {
		t.Helper()
		iid := filepath.Join(t.TempDir(), "iid")
		args := append([]string{"--root", root, "build", "--progress=plain", "--iidfile", iid, "--build-arg", "SOURCE_DATE_EPOCH=4000000000"}, flags...)
		log, code := cliWith(t, nil, nil, append(args, srv.GitURL+"/app.git#v1")...)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, log)
		}
		m := regexp.MustCompile(`(\d+) steps, (\d+) cached`).FindStringSubmatch(log)
		if cached := m != nil && m[1] == m[2]; cached == (len(flags) > 0) {
			t.Errorf("build %q: cached %v:\n%s", flags, cached, log)
		}
		dt, _ := os.ReadFile(iid)
		return string(dt)
	}
	a := build("--no-cache")
	time.Sleep(1100 * time.Millisecond) // a clone a second later has other file times
	if b, c := build("--no-cache"), build(); a != b || b != c || a == "" {
		t.Errorf("three builds of one commit: %q, %q and %q", a, b, c)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) > 0 {
		t.Errorf("left in the store's tmp: %v", ents)
	}
}

// TestCLIURLContexts builds from an https tarball (served on loopback,
// its certificate trusted through SSL_CERT_FILE) and from a plain
// Dockerfile URL.
func TestCLIURLContexts(t *testing.T) {
	buildtest.RequireRoot(t)
	root := t.TempDir()
	files := map[string][]byte{
		"/ctx.tar.gz":  makeTar(t, "gzip", []tarEntry{{name: "Dockerfile", body: copyAll}, {name: "a.txt", body: "a\n"}}),
		"/ctx.tar.zst": makeTar(t, "zstd", []tarEntry{{name: "Dockerfile", body: copyAll}, {name: "z.txt", body: "z\n"}}),
		"/Dockerfile":  []byte("FROM scratch\nLABEL from=url\n"),
		"/evil.tar":    makeTar(t, "", []tarEntry{{name: "Dockerfile", body: copyAll}, {name: "../../../../../../../../tmp/builder-url-escape", body: "x"}}),
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dt, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.URL.Path == "/Dockerfile" {
			w.Header().Set("Content-Type", "text/plain")
		}
		w.Write(dt)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	env := []string{"SSL_CERT_FILE=" + ca}
	for _, tc := range []struct {
		name, path string
		files      map[string]string
		err        string
	}{
		{"tar.gz", "/ctx.tar.gz", map[string]string{"ctx/a.txt": "a\n"}, ""},
		{"tar.zst", "/ctx.tar.zst", map[string]string{"ctx/z.txt": "z\n"}, ""},
		{"Dockerfile", "/Dockerfile", map[string]string{}, ""},
		{"404", "/missing.tar", nil, "404"},
		{"escaping entry", "/evil.tar", nil, "escapes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buildCase(t, root, nil, env, []string{srv.URL + tc.path}, tc.err, tc.files)
			if _, err := os.Lstat("/tmp/builder-url-escape"); err == nil {
				os.Remove("/tmp/builder-url-escape")
				t.Fatal("the archive wrote outside the context")
			}
		})
	}
}

// buildCase builds args (CONTEXT last) into a local directory with stdin
// and env, and checks that it fails with an output holding wantErr, or
// succeeds with files (as checkFiles has them).
func buildCase(t *testing.T, root string, stdin []byte, env, args []string, wantErr string, files map[string]string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	log, code := cliWith(t, stdin, env, append([]string{"--root", root, "build", "--progress=plain", "-o", "type=local,dest=" + out}, args...)...)
	if wantErr != "" {
		if code == 0 || !strings.Contains(log, wantErr) {
			t.Fatalf("exit %d, want an error with %q:\n%s", code, wantErr, log)
		}
		return
	}
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, log)
	}
	checkFiles(t, out, files)
}

// checkFiles compares files under dir: "" means absent, "?" present.
func checkFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, want := range files {
		dt, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case want == "":
			if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
				t.Errorf("%s exists", name)
			}
		case want == "?":
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case string(dt) != want:
			t.Errorf("%s = %q, %v; want %q", name, dt, err, want)
		}
	}
}

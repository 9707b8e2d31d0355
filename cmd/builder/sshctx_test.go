package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/internal/gitserver"
)

// TestCLISSHAndBuildContextErrors checks that bad --ssh and
// --build-context values are usage errors (exit 2) of one line, found
// before anything is built.
func TestCLISSHAndBuildContextErrors(t *testing.T) {
	dir := t.TempDir()
	ctx := writeCase(t, "FROM scratch\n", map[string]string{})
	key := buildtest.SSHKey(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ssh", "=x"}, `--ssh "=x": no id`},
		{[]string{"--ssh", "default"}, `--ssh default: SSH_AUTH_SOCK is not set`},
		{[]string{"--ssh", "gh=" + filepath.Join(dir, "missing")}, `--ssh gh: .*no such file`},
		{[]string{"--ssh", "gh=" + ctx}, `--ssh gh: .*neither a unix socket nor a key file`},
		{[]string{"--ssh", "gh=" + key, "--ssh", "gh=" + key}, `--ssh gh: id given twice`},
		{[]string{"--build-context", "src"}, `--build-context "src": want NAME=VALUE`},
		{[]string{"--build-context", "src=" + filepath.Join(dir, "missing")}, `--build-context src: .*no such file`},
		{[]string{"--build-context", "src=" + ctx, "--build-context", "docker.io/library/src=" + ctx}, `--build-context docker.io/library/src: name given twice`},
		{[]string{"--build-context", "x=oci-layout://" + dir}, `is not an OCI layout`},
	} {
		args := append([]string{"--root", t.TempDir(), "build"}, tc.args...)
		cmd := append(args, ctx)
		out, code := cliWith(t, nil, []string{"SSH_AUTH_SOCK="}, cmd...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 2 || len(lines) != 1 || !regexp.MustCompile(tc.want).MatchString(out) {
			t.Errorf("builder %q: exit %d, output %q; want exit 2 and one line matching %s", tc.args, code, out, tc.want)
		}
	}
}

// TestCLISSHAndBuildContext builds with --ssh default=KEYFILE and
// --build-context NAME=DIR from the command line, then builds a Git
// CONTEXT cloned over ssh (an sshd on loopback) through that agent.
func TestCLISSHAndBuildContext(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	key := buildtest.SSHKey(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("from-src\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := writeCase(t, `ARG BASE
FROM $BASE
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && test "$SSH_AUTH_SOCK" = /run/buildkit/ssh_agent.0
COPY --from=src /hello /hello
`, map[string]string{})
	out := filepath.Join(t.TempDir(), "out")
	o, code := cli(t, "--root", t.TempDir(), "build", "--progress", "plain", "--build-arg", "BASE="+base,
		"--ssh", "default="+key, "--build-context", "src="+src, "-o", "type=local,dest="+out, ctx)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, o)
	}
	if dt, err := os.ReadFile(filepath.Join(out, "hello")); err != nil || string(dt) != "from-src\n" {
		t.Fatalf("/hello = %q, %v", dt, err)
	}

	// A Git CONTEXT over ssh is cloned through the --ssh default agent.
	port := buildtest.SSHD(t, key)
	gs := gitserver.Start(t)
	r := gs.Repo(t, "app")
	r.Commit("one", map[string]string{"Dockerfile": "FROM scratch\nCOPY hello /hello\n", "hello": "from-git-over-ssh\n"})
	r.Push()
	url := "ssh://root@127.0.0.1:" + strconv.Itoa(port) + filepath.Join(gs.Dir, "app.git")
	out = filepath.Join(t.TempDir(), "out")
	o, code = cli(t, "--root", t.TempDir(), "build", "--progress", "plain", "--ssh", "default="+key, "-o", "type=local,dest="+out, url)
	if code != 0 {
		t.Fatalf("build of %s: exit %d\n%s", url, code, o)
	}
	if dt, err := os.ReadFile(filepath.Join(out, "hello")); err != nil || string(dt) != "from-git-over-ssh\n" {
		t.Fatalf("/hello = %q, %v", dt, err)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestCLICall runs --check and --call on the Dockerfiles under
// testdata/check: BuildKit's rules and messages, # check= directives, the
// exit status, and buildx's text formats (the golden files), without
// building anything.
func TestCLICall(t *testing.T) {
	// --check resolves the base images' configs: busybox is in the store,
	// and --pull=never keeps docker.io out of reach.
	root := storeWith(t, map[string]v1.Image{"busybox": lintBaseImage(t, hostArch(), "PATH=/bin")})
	for _, c := range []struct {
		dir    string
		args   []string
		code   int
		golden string // file under the case's directory, or ""
		want   []string
	}{
		{"lint", []string{"--check"}, 1, "check.golden", []string{"Check complete, 8 warnings have been found!"}},
		{"lint", []string{"--call=check"}, 1, "check.golden", nil},
		{"lint", []string{"--call", "outline"}, 0, "outline.golden", nil},
		{"lint", []string{"--call", "targets"}, 0, "targets.golden", nil},
		{"lint", []string{"--call", "check,format=json"}, 1, "", []string{`"ruleName": "SecretsUsedInArgOrEnv"`, `"sources"`}},
		{"lint", []string{"--call", "outline", "--build-arg", "VERSION=2.0"}, 0, "", []string{"VERSION     2.0"}},
		{"lint", []string{"--call", "outline", "--target", "base"}, 0, "", []string{"TARGET: base", "API_TOKEN"}},
		{"clean", []string{"--check"}, 0, "", []string{"Check complete, no warnings found."}},
		{"skip", []string{"--check"}, 0, "", []string{"Check complete, no warnings found."}},
		// CopyIgnoredFile: the context's .dockerignore, as BuildKit reads it.
		{"ignored", []string{"--check"}, 1, "check.golden", nil},
		{"ignored-all", []string{"--check"}, 1, "check.golden", nil},
		{"ignored-negated", []string{"--check"}, 0, "", []string{"Check complete, no warnings found."}},
		{"ignored", []string{"--call", "check,format=json"}, 1, "", []string{`"ruleName": "CopyIgnoredFile"`, `"detail": "Attempting to Add file \"build.log\" that is excluded by .dockerignore"`}},
		{"lint", []string{"--check", "--call", "outline"}, 2, "", []string{"--check is --call check"}},
		{"lint", []string{"--call", "explain"}, 2, "", []string{"--call explain: use build, check, outline or targets"}},
	} {
		t.Run(c.dir+strings.Join(c.args, "_"), func(t *testing.T) {
			dir := filepath.Join("testdata", "check", c.dir)
			out, code := cli(t, append(append([]string{"--root", root, "build", "--pull=never"}, c.args...), dir)...)
			if code != c.code {
				t.Errorf("exit %d, want %d\n%s", code, c.code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if c.golden != "" {
				want, err := os.ReadFile(filepath.Join(dir, c.golden))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(out, string(want)) {
					t.Errorf("output:\n%s\nwant (testdata/check/%s/%s):\n%s", out, c.dir, c.golden, want)
				}
			}
		})
	}
}

// TestCLIBuildxFlagTable checks what builder build says to each buildx flag
// it does not implement, and to bad values of those it does, before any
// build starts.
func TestCLIBuildxFlagTable(t *testing.T) {
	ctx := filepath.Join("testdata", "check", "clean")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--builder", "mybuilder", "--call", "targets"}, 0, "TARGET"},
		{[]string{"--debug", "--rm", "--force-rm", "--compress", "--disable-content-trust", "--load", "--call", "targets"}, 0, "TARGET"},
		{[]string{"--squash"}, 2, "--squash is a buildx flag builder does not support: layers are kept as built"},
		{[]string{"--cpu-shares", "512"}, 2, "--cpu-shares is a buildx flag builder does not support: use --cpus"},
		{[]string{"--security-opt", "seccomp=unconfined"}, 2, "--security-opt is a buildx flag builder does not support"},
		{[]string{"--frobnicate"}, 2, "unknown flag: --frobnicate (see 'builder build --help'; docs/cli.md lists every buildx flag"},
		{[]string{"--pull=sometimes"}, 2, "--pull=sometimes: use always, missing or never"},
		{[]string{"--ulimit", "nofile=2048:1024"}, 2, "soft limit must be less than or equal to hard limit"},
		{[]string{"--ulimit", "bogus=1"}, 2, "invalid ulimit type: bogus"},
		{[]string{"--ulimit", "nofile=-5"}, 2, "limits are -1 (unlimited) or at least 0"},
		{[]string{"--shm-size", "-1"}, 2, "--shm-size \"-1\": want a positive size"},
		{[]string{"--add-host", "nocolon"}, 2, "want HOST:IP"},
		{[]string{"--add-host", "db:not-an-ip"}, 2, "invalid IP address"},
		{[]string{"--add-host", "evil\nhost:1.2.3.4"}, 2, "invalid host name"},
		{[]string{"--add-host", "gw:host-gateway"}, 2, "needs --network host"},
		{[]string{"--add-host", "gw:host-gateway", "--network", "host", "--call", "targets"}, 0, "TARGET"},
		{[]string{"--annotation", "nokey"}, 2, `invalid annotation "nokey", expected key=value`},
		{[]string{"--annotation", "bogus:k=v"}, 2, `unknown annotation type "bogus"`},
		{[]string{"--annotation", "manifest[linux/arm64:k=v"}, 2, `invalid annotation type "manifest[linux/arm64", expected type and optional platform in square brackets`},
		{[]string{"--progress", "rawjson", "--call", "targets"}, 0, "TARGET"},
		{[]string{"--progress", "fancy"}, 2, "unknown progress mode \"fancy\""},
	} {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			out, code := cli(t, append(append([]string{"--root", t.TempDir(), "build"}, c.args...), ctx)...)
			if code != c.code || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, c.code, c.want, out)
			}
			if c.code == 2 && strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("a usage error is one line:\n%s", out)
			}
		})
	}
}

// TestCLICheckIgnoreOutsideContext: a .dockerignore that is a symlink out
// of the context is not read by --check (nor by a build): CopyIgnoredFile
// sees no patterns, so a file outside cannot steer the checks.
func TestCLICheckIgnoreOutsideContext(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	if err := os.WriteFile(outside, []byte("secrets\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, relative := range []bool{false, true} {
		ctx := writeCase(t, "FROM scratch\nCOPY secrets/x /x\n", map[string]string{})
		target := outside
		if relative {
			rel, err := filepath.Rel(ctx, outside)
			if err != nil {
				t.Fatal(err)
			}
			target = rel
		}
		if err := os.Symlink(target, filepath.Join(ctx, ".dockerignore")); err != nil {
			t.Fatal(err)
		}
		out, code := cli(t, "--root", t.TempDir(), "build", "--check", ctx)
		if code != 0 || !strings.Contains(out, "Check complete, no warnings found.") {
			t.Errorf(".dockerignore -> %s: exit %d:\n%s", target, code, out)
		}
	}
}

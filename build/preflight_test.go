package build

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestPreflight builds Dockerfiles whose first RUN takes three seconds
// and leaves a marker in a cache mount, and whose last step cannot work
// (a required secret or ssh agent that was not given, a missing
// entitlement, a bad --mount, a git source without git, a bad -t name):
// each build must fail within a second, naming the line, with no marker
// written. A stage the target does not need may lack its secret; the
// last case, which fails nothing, shows that the marker does appear when
// the first RUN runs.
func TestPreflight(t *testing.T) {
	f := newFixture(t)
	prefix, err := os.ReadFile("../testdata/builds/preflight/Dockerfile.prefix")
	if err != nil {
		t.Fatal(err)
	}
	noGit := t.TempDir() // a PATH without git
	for _, tc := range []struct {
		name, last string
		opt        func(o *Options)
		want       string // error regexp; "" for a build that succeeds
	}{
		{name: "secret", last: "RUN --mount=type=secret,id=token,required cat /run/secrets/token",
			want: `^Dockerfile:6: RUN --mount=type=secret,id=token,required .*: secret token: not found: add --secret id=token`},
		{name: "secret-by-target", last: "RUN --mount=type=secret,target=/etc/token,required=true true",
			want: `^Dockerfile:6: .*secret token: not found`},
		{name: "ssh", last: "RUN --mount=type=ssh,required ssh-add -l",
			want: `^Dockerfile:6: .*RUN --mount=type=ssh,id=default is required but no agent was given for it: add --ssh default`},
		{name: "ssh-id", last: "RUN --mount=type=ssh,id=gh,required=true true",
			want: `^Dockerfile:6: .*id=gh is required .*--ssh gh`},
		{name: "network-host", last: "RUN --network=host true", want: `^Dockerfile:6: .*--allow network.host`},
		{name: "insecure", last: "RUN --security=insecure true", want: `^Dockerfile:6: .*--allow security.insecure`},
		{name: "bad-mount", last: "RUN --mount=type=bogus true", want: `^Dockerfile:6: .*bogus`},
		{name: "git-missing", last: "ADD https://example.invalid/repo.git /repo",
			opt:  func(o *Options) { t.Setenv("PATH", noGit) },
			want: `^Dockerfile:6: ADD .*: the git binary is not installed`},
		{name: "bad-tag", last: "RUN true", opt: func(o *Options) { o.Tags = []string{"Bad Tag!"} }, want: `^invalid tag "Bad Tag!"`},
		{name: "git-context", last: "COPY --from=repo / /",
			opt: func(o *Options) {
				o.NamedContexts = namedContexts(t, "repo=https://example.invalid/repo.git")
				t.Setenv("PATH", noGit)
			},
			want: `^--build-context repo: the git binary is not installed`},
		{name: "optional-and-unneeded", last: "RUN --mount=type=secret,id=token --mount=type=ssh true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "context"), 0o755)
			os.WriteFile(filepath.Join(dir, "Dockerfile"), append(prefix, tc.last+"\n"...), 0o644)
			start := time.Now()
			_, log, err := f.build(dir, func(o *Options) {
				if tc.opt != nil {
					tc.opt(o)
				}
			})
			took := time.Since(start)
			ran := markerWritten(t, f.root)
			if tc.want == "" {
				if err != nil || !ran {
					t.Fatalf("build: %v (first RUN ran: %v)\n%s", err, ran, log)
				}
				return
			}
			if err == nil || !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Fatalf("error %v, want %s\n%s", err, tc.want, log)
			}
			if ran || took > time.Second {
				t.Errorf("the build failed after %v, the first RUN ran: %v", took, ran)
			}
		})
	}
}

// markerWritten reports whether the first RUN left its marker in its
// cache mount, somewhere under the store root, and removes it.
func markerWritten(t *testing.T, root string) bool {
	t.Helper()
	found := false
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "ran" && fi.Mode().IsRegular() {
			found = true
			os.Remove(p)
		}
		return nil
	})
	return found
}

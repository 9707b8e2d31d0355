package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/build/attest"
	"builder/internal/gitserver"
)

// TestProvenanceAddGit: the record of a build lists each git repository
// ADD read with the commit its ref resolved to, and provenance names it as
// BuildKit v0.26 does (source/git/identifier.go Capture): the remote URL,
// "#ref" when the source names a ref (never the subdirectory), credentials
// masked, and the commit as a sha1 digest.
func TestProvenanceAddGit(t *testing.T) {
	f := newFixture(t)
	srv := gitserver.Start(t)
	repo := srv.Repo(t, "prov")
	first := repo.Commit("one", map[string]string{"f.txt": "v1\n", "sub/g.txt": "g\n"})
	repo.Git("tag", "v1")
	second := repo.Commit("two", map[string]string{"f.txt": "v2\n"})
	repo.Push()
	url := srv.HTTPURL + "/prov.git"
	withUser := strings.Replace(url, "http://", "http://user:ghp-add-token@", 1)
	masked := strings.Replace(url, "http://", "http://xxxxx:xxxxx@", 1)
	for _, tc := range []struct {
		name, src, want, commit string
	}{
		{"tag", url + "#v1", url + "#v1", first},
		{"default-branch", url, url, second},
		{"subdir", url + "#v1:sub", url + "#v1", first},
		{"commit", url + "#" + first, url + "#" + first, first},
		{"credentials", withUser + "#main", masked + "#main", second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "context"), 0o755)
			os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("ARG BASE\nFROM $BASE\nADD "+tc.src+" /src\n"), 0o644)
			res, _ := f.mustBuild(dir)
			if len(res.Record.Git) != 1 || res.Record.Git[0].Commit != tc.commit {
				t.Fatalf("git sources %+v, want one at %s", res.Record.Git, tc.commit)
			}
			p, err := attest.NewProvenance(res.Record, attest.ProvenanceOptions{Mode: attest.ModeMax})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range p.BuildDefinition.ResolvedDependencies {
				if strings.Contains(d.URI, "/prov.git") {
					got = append(got, d.URI+" sha1:"+d.Digest["sha1"])
				}
			}
			if want := tc.want + " sha1:" + tc.commit; len(got) != 1 || got[0] != want {
				t.Errorf("resolvedDependencies name %q, want %q", got, want)
			}
		})
	}
}

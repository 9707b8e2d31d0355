package build

import (
	"os"
	"path/filepath"
	"testing"

	"builder/build/attest"
	"builder/internal/gitserver"
)

// TestProvenanceAddGit: the record of a build lists the git repository
// ADD read with the commit its ref resolved to, which provenance names as
// a resolved dependency.
func TestProvenanceAddGit(t *testing.T) {
	f := newFixture(t)
	srv := gitserver.Start(t)
	repo := srv.Repo(t, "prov")
	first := repo.Commit("one", map[string]string{"f.txt": "v1\n"})
	repo.Git("tag", "v1")
	repo.Commit("two", map[string]string{"f.txt": "v2\n"})
	repo.Push()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "context"), 0o755)
	url := srv.HTTPURL + "/prov.git"
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("ARG BASE\nFROM $BASE\nADD "+url+"#v1 /src\n"), 0o644)
	res, _ := f.mustBuild(dir)
	if len(res.Record.Git) != 1 || res.Record.Git[0].URL != url || res.Record.Git[0].Commit != first {
		t.Fatalf("git sources %+v, want %s at %s", res.Record.Git, url, first)
	}
	p, err := attest.NewProvenance(res.Record, attest.ProvenanceOptions{Mode: attest.ModeMin})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range p.BuildDefinition.ResolvedDependencies {
		found = found || (d.URI == url && d.Digest["sha1"] == first)
	}
	if !found {
		t.Errorf("resolvedDependencies %+v lack %s", p.BuildDefinition.ResolvedDependencies, url)
	}
}

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"builder/build/buildtest"
)

// TestCLIStoreCommands drives the store commands end to end on one store:
// ls, diff, du, check (healthy and corrupted), rmi, prune and version.
func TestCLIStoreCommands(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	for _, v := range []string{"one", "two"} {
		ctx := writeCase(t, "FROM "+base+"\nRUN echo "+v+" > /f\n", map[string]string{})
		if out, code := cli(t, "--root", root, "build", "-q", "-t", "app:"+v, ctx); code != 0 {
			t.Fatalf("build app:%s: exit %d\n%s", v, code, out)
		}
	}
	// Like docker, the pulled base image is tagged in the store too.
	// Newest first.
	if ls := stdout(t, "--root", root, "ls", "--format", "{{.Name}}"); ls != "docker.io/library/app:two\ndocker.io/library/app:one\n"+base+"\n" {
		t.Errorf("ls --format {{.Name}} = %q", ls)
	}

	if out, code := cli(t, "--root", root, "diff", "app:one", "app:one"); code != 0 {
		t.Errorf("diff of an image with itself: exit %d\n%s", code, out)
	}
	out, code := cli(t, "--root", root, "diff", "app:one", "app:two")
	if code != 1 || !strings.Contains(out, "/f") {
		t.Errorf("diff app:one app:two: exit %d, want 1 and a line about /f\n%s", code, out)
	}

	du := stdout(t, "--root", root, "du")
	if !regexp.MustCompile(`Image blobs\s+3 images`).MatchString(du) || !regexp.MustCompile(`Build cache blobs\s+[2-9] records`).MatchString(du) {
		t.Errorf("du does not count two images (and the base) and their cache records:\n%s", du)
	}
	if got := stdout(t, "--root", root, "check"); !strings.Contains(got, "store is consistent") {
		t.Errorf("check on a healthy store: %q", got)
	}

	if got := stdout(t, "--root", root, "rmi", "app:two"); !strings.Contains(got, "Untagged: app:two") {
		t.Errorf("rmi: %q", got)
	}
	if ls := stdout(t, "--root", root, "images", "--format", "{{.Name}}"); strings.Contains(ls, "app:two") {
		t.Errorf("app:two still listed after rmi:\n%s", ls)
	}
	if out, code := cli(t, "--root", root, "rmi", "app:two"); code != 1 || !strings.Contains(out, "not in the local store") {
		t.Errorf("rmi of a removed image: exit %d\n%s", code, out)
	}
	if got := stdout(t, "--root", root, "prune", "--all"); !strings.Contains(got, "Total reclaimed space:") {
		t.Errorf("prune --all: %q", got)
	}
	if du := stdout(t, "--root", root, "du"); !regexp.MustCompile(`Build cache blobs\s+0 records`).MatchString(du) ||
		!regexp.MustCompile(`Image blobs\s+2 images`).MatchString(du) {
		t.Errorf("du after prune --all keeps cache records or lost the tagged image:\n%s", du)
	}
	if out, code := cli(t, "--root", root, "build", "-t", "app:one", writeCase(t, "FROM "+base+"\nRUN echo one > /f\n", map[string]string{})); code != 0 {
		t.Errorf("build after prune: exit %d\n%s", code, out)
	}

	// Corrupt one blob: check names it and exits 1.
	blobs, err := filepath.Glob(filepath.Join(root, "blobs", "sha256", "*"))
	if err != nil || len(blobs) == 0 {
		t.Fatalf("no blobs in the store: %v", err)
	}
	victim := blobs[0]
	if err := os.WriteFile(victim, []byte("not what the digest says"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = cli(t, "--root", root, "check")
	if code != 1 || !strings.Contains(out, filepath.Base(victim)) {
		t.Errorf("check on a corrupted store: exit %d, want 1 and the blob %s named\n%s", code, filepath.Base(victim), out)
	}

	if v := stdout(t, "version"); !strings.HasPrefix(v, "builder ") {
		t.Errorf("version = %q", v)
	}
}

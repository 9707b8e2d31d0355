package main

import (
	"strings"
	"testing"

	"builder/build/buildtest"
)

// TestCLIImageIDs: every command that names an image takes the image ID
// (config digest, full, with or without sha256:, or a unique prefix) and
// the manifest digest; images -q prints IDs; rmi of an ID with several
// names needs -f; prune takes -f.
func TestCLIImageIDs(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nRUN echo id > /id\n", map[string]string{})
	manifest := strings.TrimSpace(stdout(t, "--root", root, "build", "-q", "-t", "app:1", ctx))
	id := strings.TrimSpace(stdout(t, "--root", root, "inspect", "-f", "{{.Id}}", "app:1"))
	if !strings.HasPrefix(id, "sha256:") || len(id) != 71 || id == manifest {
		t.Fatalf("inspect .Id = %q (manifest %s), want the config digest", id, manifest)
	}
	hex := strings.TrimPrefix(id, "sha256:")
	if q := stdout(t, "--root", root, "images", "-q", "--filter", "reference=app"); q != hex[:12]+"\n" {
		t.Errorf("images -q = %q, want %s", q, hex[:12])
	}
	if q := stdout(t, "--root", root, "images", "-q", "--no-trunc", "app"); q != id+"\n" {
		t.Errorf("images -q --no-trunc = %q, want %s", q, id)
	}
	for _, ref := range []string{id, hex, hex[:12], hex[:4], manifest, strings.TrimPrefix(manifest, "sha256:")[:10]} {
		if got := stdout(t, "--root", root, "inspect", "-f", "{{.Digest}}", ref); got != manifest+"\n" {
			t.Errorf("inspect %s = %q, want %s", ref, got, manifest)
		}
		if out, code := cli(t, "--root", root, "history", "-q", ref); code != 0 {
			t.Errorf("history %s: exit %d\n%s", ref, code, out)
		}
		if out, code := cli(t, "--root", root, "diff", ref, "app:1"); code != 0 {
			t.Errorf("diff %s app:1: exit %d, want 0\n%s", ref, code, out)
		}
		if out, code := cli(t, "--root", root, "save", "-o", t.TempDir()+"/a.tar", ref); code != 0 {
			t.Errorf("save %s: exit %d\n%s", ref, code, out)
		}
	}
	for _, bad := range []string{"sha256:" + strings.Repeat("0", 64), hex[:3] + "x", "sha256:", strings.Repeat("0", 64)} {
		if out, code := cli(t, "--root", root, "inspect", bad); code != 1 || !strings.Contains(out, "not in the local store") && !strings.Contains(out, "parse") {
			t.Errorf("inspect %q: exit %d, want 1 and one error\n%s", bad, code, out)
		}
	}
	if out, code := cli(t, "--root", root, "tag", hex[:12], "app:2", "app:3"); code != 0 {
		t.Fatalf("tag by ID: exit %d\n%s", code, out)
	}
	if out, code := cli(t, "--root", root, "push", hex[:12]); code != 2 || !strings.Contains(out, "REF") {
		t.Errorf("push of an ID without a REF: exit %d, want 2\n%s", code, out)
	}
	if out, code := cli(t, "--root", root, "push", hex[:12], strings.Split(base, "/")[0]+"/pushed:1"); code != 0 {
		t.Errorf("push by ID: exit %d\n%s", code, out)
	}
	// Three names: rmi by ID refuses without -f and removes nothing.
	if out, code := cli(t, "--root", root, "rmi", hex[:12]); code != 1 || !strings.Contains(out, "-f") {
		t.Errorf("rmi of an ID with three names: exit %d, want 1 and a hint at -f\n%s", code, out)
	}
	if n := strings.Count(stdout(t, "--root", root, "images", "-q", "app"), hex[:12]); n != 3 {
		t.Errorf("after a refused rmi, %d names left, want 3", n)
	}
	out := stdout(t, "--root", root, "rmi", "-f", hex[:8])
	for _, n := range []string{"app:1", "app:2", "app:3"} {
		if !strings.Contains(out, "Untagged: docker.io/library/"+n) {
			t.Errorf("rmi -f does not untag %s:\n%s", n, out)
		}
	}
	if q := stdout(t, "--root", root, "images", "-q", "app"); q != "" {
		t.Errorf("after rmi -f: images -q app = %q", q)
	}
	if out, code := cli(t, "--root", root, "prune", "-f"); code != 0 {
		t.Errorf("prune -f: exit %d\n%s", code, out)
	}
}

// TestCLIDiffExitCodes: 0 same, 1 differ, 2 error; a name the store lacks
// is an error, not a Docker Hub lookup.
func TestCLIDiffExitCodes(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	for _, v := range []string{"a", "b"} {
		ctx := writeCase(t, "FROM "+base+"\nRUN echo "+v+" > /f\n", map[string]string{})
		if out, code := cli(t, "--root", root, "build", "-q", "-t", "d:"+v, ctx); code != 0 {
			t.Fatalf("build: exit %d\n%s", code, out)
		}
	}
	for _, tc := range []struct {
		a, b string
		code int
		want string
	}{
		{"d:a", "d:a", 0, ""},
		{"d:a", "d:b", 1, "/f"},
		{"d:a", "not-here:1", 2, "not in the local store (write docker://not-here:1 for a registry)"},
		{"d:a", "docker://" + strings.Split(base, "/")[0] + "/nothing:1", 2, "nothing:1"},
		{"d:a", "oci-archive:/nonexistent.tar", 2, "nonexistent"},
		{"d:a", "docker://" + base, 1, "/f"},
	} {
		out, code := cli(t, "--root", root, "diff", tc.a, tc.b)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("diff %s %s: exit %d, want %d and %q\n%s", tc.a, tc.b, code, tc.code, tc.want, out)
		}
		if code == 1 && strings.Contains(out, "ERROR") {
			t.Errorf("diff %s %s: differing images are no error:\n%s", tc.a, tc.b, out)
		}
	}
	if out, code := cli(t, "--root", root, "diff", "d:a"); code != 2 {
		t.Errorf("diff with one image: exit %d, want 2\n%s", code, out)
	}
}

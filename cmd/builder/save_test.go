package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/internal/testenv"
)

// TestCLISaveSeveral: save writes several images into one OCI archive (an
// index entry per name, which skopeo reads by its ref name) or docker
// archive, under podman's format names too, and load brings back every
// name.
func TestCLISaveSeveral(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	digests := map[string]string{}
	for _, v := range []string{"1", "2"} {
		ctx := writeCase(t, "FROM "+base+"\nRUN echo "+v+" > /v\n", map[string]string{})
		digests[v] = strings.TrimSpace(stdout(t, "--root", root, "build", "-q", "-t", "app:"+v, ctx))
	}
	dir := t.TempDir()
	skopeo, haveSkopeo := testenv.OptionalTool(t, "skopeo")
	for _, format := range []string{"oci", "oci-archive", "docker", "docker-archive"} {
		p := filepath.Join(dir, format+".tar")
		if out, code := cli(t, "--root", root, "save", "--format", format, "-o", p, "app:1", "app:2"); code != 0 {
			t.Fatalf("save --format %s: exit %d\n%s", format, code, out)
		}
		other := t.TempDir()
		out := stdout(t, "--root", other, "load", "-i", p)
		for _, v := range []string{"1", "2"} {
			if !strings.Contains(out, "Loaded image: docker.io/library/app:"+v+"\n") {
				t.Errorf("load of the %s archive lacks app:%s:\n%s", format, v, out)
			}
		}
		if !strings.HasPrefix(format, "oci") {
			continue
		}
		for v, want := range digests {
			if got := stdout(t, "--root", other, "inspect", "-f", "{{.Digest}}", "app:"+v); got != want+"\n" {
				t.Errorf("%s: app:%s loaded as %s, want %s", format, v, got, want)
			}
			if !haveSkopeo {
				continue
			}
			b, err := exec.Command(skopeo, "inspect", "--tmpdir", t.TempDir(), "--format", "{{.Digest}}", "oci-archive:"+p+":"+v).CombinedOutput()
			if err != nil || strings.TrimSpace(string(b)) != want {
				t.Errorf("skopeo inspect oci-archive:%s:%s = %s (%v), want %s", p, v, b, err, want)
			}
		}
	}
	if out, code := cli(t, "--root", root, "save", "--format", "tar", "-o", filepath.Join(dir, "x.tar"), "app:1"); code != 2 {
		t.Errorf("save --format tar: exit %d, want 2\n%s", code, out)
	}
}

package main

import (
	"strings"
	"testing"

	"builder/build/buildtest"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// TestCLIInspectRemote inspects an image in a registry with docker://REF,
// through the same registry client as pull: manifest digest and layers
// as the registry has them, and one ERROR line for an unknown tag.
func TestCLIInspectRemote(t *testing.T) {
	reg := buildtest.Registry(t)
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	buildtest.Push(t, reg+"/inspect/app:1", img)
	want, _ := img.Digest()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	root := t.TempDir()
	out, code := cli(t, "--root", root, "inspect", "-f", "{{.Digest}} {{len .Layers}}", "docker://"+reg+"/inspect/app:1")
	if code != 0 || strings.TrimSpace(out) != want.String()+" 2" {
		t.Errorf("inspect docker://: exit %d, %q, want %q", code, out, want.String()+" 2")
	}
	out, code = cli(t, "--root", root, "inspect", "docker://"+reg+"/inspect/app:nope")
	oneErrorLine(t, "inspect of an unknown tag", out, code, "manifest unknown")
}

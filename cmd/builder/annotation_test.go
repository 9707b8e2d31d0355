package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/buildtest"
)

// TestCLIAnnotationPerPlatform builds two platforms (cross-compile style,
// no emulation) and checks that a manifest[PLATFORM]: annotation lands only
// on that platform's manifest while a plain one lands on both.
func TestCLIAnnotationPerPlatform(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.MultiArchRegistry(t)
	df := `FROM --platform=$BUILDPLATFORM ` + base + ` AS build
ARG TARGETARCH
RUN echo "$TARGETARCH" > /arch
FROM scratch
COPY --from=build /arch /
`
	ctxDir := writeCase(t, df, map[string]string{})
	env := []string{"BUILDER_BINFMT_MISC=" + fakeBinfmt(t, nil)}
	out := filepath.Join(t.TempDir(), "oci.tar")
	o, code := cliWith(t, nil, env, "--root", t.TempDir(), "build", "--progress", "plain", "--provenance=false",
		"--platform", "linux/arm64,linux/amd64",
		"--annotation", "org.example.all=both",
		"--annotation", "manifest[linux/arm64]:org.example.only=arm",
		"-o", "type=oci,dest="+out, ctxDir)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, o)
	}
	files := tarFiles(t, out)
	var top v1.IndexManifest
	if err := json.Unmarshal([]byte(files["index.json"]), &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json %s (%v)", files["index.json"], err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal([]byte(files["blobs/sha256/"+top.Manifests[0].Digest.Hex]), &idx); err != nil || len(idx.Manifests) != 2 {
		t.Fatalf("index %s (%v)", files["blobs/sha256/"+top.Manifests[0].Digest.Hex], err)
	}
	for _, d := range idx.Manifests {
		var m v1.Manifest
		if err := json.Unmarshal([]byte(files["blobs/sha256/"+d.Digest.Hex]), &m); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"org.example.all": "both"}
		if d.Platform.Architecture == "arm64" {
			want["org.example.only"] = "arm"
		}
		if len(m.Annotations) != len(want) {
			t.Errorf("%s: annotations %v, want %v", d.Platform.Architecture, m.Annotations, want)
		}
		for k, v := range want {
			if m.Annotations[k] != v {
				t.Errorf("%s: annotations %v, want %v", d.Platform.Architecture, m.Annotations, want)
			}
		}
	}
}

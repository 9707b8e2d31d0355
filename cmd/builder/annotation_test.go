package main

import (
	"encoding/json"
	"maps"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/buildtest"
	"builder/build/push/registrytest"
	"builder/export"
	"builder/internal/testenv"
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

// TestCLIAnnotationLevels writes every --annotation level buildx has and
// reads each back where BuildKit puts it: a multi-platform build's index
// (in the OCI archive and as pushed, read with skopeo inspect --raw), its
// manifests' descriptors, and the index's entry in index.json; a
// single-platform build's manifest-descriptor on its index.json entry.
// What BuildKit refuses is refused with its words.
func TestCLIAnnotationLevels(t *testing.T) {
	buildtest.RequireRoot(t)
	skopeo := testenv.RequireTool(t, "skopeo")
	base := buildtest.MultiArchRegistry(t)
	df := `FROM --platform=$BUILDPLATFORM ` + base + ` AS build
ARG TARGETARCH
RUN echo "$TARGETARCH" > /arch
FROM scratch
COPY --from=build /arch /
`
	ctxDir := writeCase(t, df, map[string]string{})
	env := []string{"BUILDER_BINFMT_MISC=" + fakeBinfmt(t, nil)}
	root := t.TempDir()
	ref := registrytest.Shared(t, registrytest.Options{}).Repo("annotations") + ":v1"
	build := func(t *testing.T, args ...string) (string, int) {
		t.Helper()
		return cliWith(t, nil, env, append(append([]string{"--root", root, "build", "--progress", "plain", "--provenance=false"}, args...), ctxDir)...)
	}
	levels := []string{
		"--annotation", "index:org.example.index=idx",
		"--annotation", "index-descriptor:org.example.idxdesc=top",
		"--annotation", "manifest-descriptor:org.example.desc=all",
		"--annotation", "manifest-descriptor[linux/arm64]:org.example.armdesc=arm",
		"--annotation", "manifest,index:org.example.both=1",
	}

	t.Run("multi-platform", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "oci.tar")
		o, code := build(t, append([]string{"--platform", "linux/arm64,linux/amd64", "-t", ref, "--push",
			"-o", "type=oci,dest=" + out}, levels...)...)
		if code != 0 {
			t.Fatalf("build: exit %d\n%s", code, o)
		}
		files := tarFiles(t, out)
		var top v1.IndexManifest
		if err := json.Unmarshal([]byte(files["index.json"]), &top); err != nil || len(top.Manifests) != 1 {
			t.Fatalf("index.json %s (%v)", files["index.json"], err)
		}
		if a := top.Manifests[0].Annotations; a["org.example.idxdesc"] != "top" || a[export.AnnotationContainerdName] == "" || len(a) != 3 {
			t.Errorf("index.json entry annotations %v, want org.example.idxdesc and the two names", a)
		}
		raw := []byte(files["blobs/sha256/"+top.Manifests[0].Digest.Hex])
		checkAnnotatedIndex(t, "oci archive", raw)
		pushed, err := exec.Command(skopeo, "inspect", "--raw", "--tls-verify=false", "docker://"+ref).Output()
		if err != nil {
			t.Fatalf("skopeo inspect --raw: %v", err)
		}
		checkAnnotatedIndex(t, "pushed", pushed)
		if string(pushed) != string(raw) {
			t.Errorf("the pushed index differs from the archive's:\n%s\n%s", pushed, raw)
		}
	})

	t.Run("multi-platform attested", func(t *testing.T) {
		// The attestation manifests join the annotated index.
		out := filepath.Join(t.TempDir(), "oci.tar")
		o, code := build(t, append([]string{"--platform", "linux/arm64,linux/amd64", "--provenance=mode=min",
			"-o", "type=oci,dest=" + out}, levels...)...)
		if code != 0 {
			t.Fatalf("build: exit %d\n%s", code, o)
		}
		files := tarFiles(t, out)
		var top, idx v1.IndexManifest
		if err := json.Unmarshal([]byte(files["index.json"]), &top); err != nil || len(top.Manifests) != 1 {
			t.Fatalf("index.json %s (%v)", files["index.json"], err)
		}
		if top.Manifests[0].Annotations["org.example.idxdesc"] != "top" {
			t.Errorf("index.json entry annotations %v", top.Manifests[0].Annotations)
		}
		if err := json.Unmarshal([]byte(files["blobs/sha256/"+top.Manifests[0].Digest.Hex]), &idx); err != nil || len(idx.Manifests) != 4 {
			t.Fatalf("index %s (%v), want 2 images and 2 attestations", files["blobs/sha256/"+top.Manifests[0].Digest.Hex], err)
		}
		if idx.Annotations["org.example.index"] != "idx" || idx.Manifests[0].Annotations["org.example.desc"] != "all" {
			t.Errorf("index annotations %v, first image's %v", idx.Annotations, idx.Manifests[0].Annotations)
		}
	})

	t.Run("docker media types", func(t *testing.T) {
		// A Docker manifest list has no annotations: OCI types, as BuildKit.
		out := filepath.Join(t.TempDir(), "oci.tar")
		o, code := build(t, "--platform", "linux/arm64,linux/amd64", "--annotation", "index:k=v",
			"-o", "type=oci,oci-mediatypes=false,dest="+out)
		if code != 0 || !strings.Contains(o, "forcibly turning on oci-mediatype mode for annotations") {
			t.Fatalf("build: exit %d\n%s", code, o)
		}
		var top v1.IndexManifest
		if err := json.Unmarshal([]byte(tarFiles(t, out)["index.json"]), &top); err != nil || top.Manifests[0].MediaType != types.OCIImageIndex {
			t.Fatalf("index.json %+v (%v), want an OCI index", top, err)
		}
	})

	t.Run("single platform", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "oci.tar")
		o, code := build(t, "--platform", "linux/arm64", "-t", "app:1", "-o", "type=oci,dest="+out,
			"--annotation", "manifest-descriptor:org.example.desc=one", "--annotation", "org.example.m=1")
		if code != 0 {
			t.Fatalf("build: exit %d\n%s", code, o)
		}
		files := tarFiles(t, out)
		var top v1.IndexManifest
		if err := json.Unmarshal([]byte(files["index.json"]), &top); err != nil || len(top.Manifests) != 1 {
			t.Fatalf("index.json %s (%v)", files["index.json"], err)
		}
		d := top.Manifests[0]
		if !d.MediaType.IsImage() || d.Annotations["org.example.desc"] != "one" || d.Annotations[export.AnnotationRefName] != "1" {
			t.Errorf("index.json entry %+v, want the image with org.example.desc and its name", d)
		}
		var m v1.Manifest
		if err := json.Unmarshal([]byte(files["blobs/sha256/"+d.Digest.Hex]), &m); err != nil || m.Annotations["org.example.m"] != "1" || m.Annotations["org.example.desc"] != "" {
			t.Errorf("manifest annotations %v (%v)", m.Annotations, err)
		}
	})

	t.Run("single platform attested", func(t *testing.T) {
		// With an attestation the image is in an index: its entry there
		// carries the manifest-descriptor annotations.
		out := filepath.Join(t.TempDir(), "oci.tar")
		o, code := build(t, "--platform", "linux/arm64", "-t", "app:1", "--provenance=mode=min", "-o", "type=oci,dest="+out,
			"--annotation", "manifest-descriptor:org.example.desc=one")
		if code != 0 {
			t.Fatalf("build: exit %d\n%s", code, o)
		}
		files := tarFiles(t, out)
		var top, idx v1.IndexManifest
		if err := json.Unmarshal([]byte(files["index.json"]), &top); err != nil || len(top.Manifests) != 1 || !top.Manifests[0].MediaType.IsIndex() {
			t.Fatalf("index.json %s (%v)", files["index.json"], err)
		}
		if err := json.Unmarshal([]byte(files["blobs/sha256/"+top.Manifests[0].Digest.Hex]), &idx); err != nil || len(idx.Manifests) != 2 {
			t.Fatalf("index (%v)", err)
		}
		if a := idx.Manifests[0].Annotations; a["org.example.desc"] != "one" {
			t.Errorf("image entry annotations %v", a)
		}
		if a := idx.Manifests[1].Annotations; a["org.example.desc"] != "" {
			t.Errorf("attestation entry annotations %v", a)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"index for one platform", []string{"--platform", "linux/arm64", "--annotation", "index:k=v"},
			"index annotations not supported for single platform export"},
		{"index-descriptor for one platform", []string{"--platform", "linux/arm64", "--annotation", "index-descriptor:k=v"},
			"index annotations not supported for single platform export"},
		{"platform not built", []string{"--platform", "linux/arm64,linux/amd64", "--annotation", "manifest[linux/s390x]:k=v"},
			"invalid annotation: no platform linux/s390x found in source"},
		{"unknown type", []string{"--annotation", "image:k=v"}, `unknown annotation type "image"`},
		{"no value", []string{"--annotation", "index:k"}, `invalid annotation "index:k", expected key=value`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, code := build(t, append(tc.args, "-o", "type=oci,dest="+filepath.Join(t.TempDir(), "x.tar"))...)
			if code == 0 || !strings.Contains(o, tc.want) || strings.Contains(o, "RUN echo") {
				t.Errorf("exit %d, want a refusal %q before any step:\n%s", code, tc.want, o)
			}
		})
	}
}

// checkAnnotatedIndex checks the index TestCLIAnnotationLevels builds.
func checkAnnotatedIndex(t *testing.T, what string, raw []byte) {
	t.Helper()
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil || len(idx.Manifests) != 2 {
		t.Fatalf("%s index %s (%v)", what, raw, err)
	}
	if want := map[string]string{"org.example.index": "idx", "org.example.both": "1"}; !maps.Equal(idx.Annotations, want) {
		t.Errorf("%s index annotations %v, want %v", what, idx.Annotations, want)
	}
	for _, d := range idx.Manifests {
		want := map[string]string{"org.example.desc": "all"}
		if d.Platform.Architecture == "arm64" {
			want["org.example.armdesc"] = "arm"
		}
		if !maps.Equal(d.Annotations, want) {
			t.Errorf("%s: %s descriptor annotations %v, want %v", what, d.Platform.Architecture, d.Annotations, want)
		}
	}
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"builder/build/buildtest"
)

// TestCLIOneBuildOneImage: with a converting output, the digest the build
// summary prints, the iidfile, the metadata file, the local tag and the
// pushed manifest are one and the same.
func TestCLIOneBuildOneImage(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	reg := strings.Split(base, "/")[0]
	root := t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nRUN echo one > /one\n", map[string]string{})
	summary := regexp.MustCompile(`image (sha256:[0-9a-f]{64}), \d+ layers`)
	for i, tc := range []struct {
		name   string
		output string
		push   bool
	}{
		{"zstd", "type=image,compression=zstd", false},
		{"dockertypes", "type=image,oci-mediatypes=false", false},
		{"uncompressed-oci-first", "type=oci,dest=%s,compression=uncompressed", false},
		{"registry-zstd", "type=registry,compression=zstd", true},
		{"registry-dockertypes", "type=registry,oci-mediatypes=false,compression=gzip,force-compression=true", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tag := "one/" + tc.name + ":1"
			if tc.push {
				tag = reg + "/" + tag
			}
			output := strings.Replace(tc.output, "%s", filepath.Join(dir, "out.tar"), 1)
			args := []string{"--root", root, "build", "--progress=plain", "-t", tag, "-o", output,
				"--iidfile", filepath.Join(dir, "iid"), "--metadata-file", filepath.Join(dir, "meta.json"), ctx}
			if i%2 == 1 {
				args = append(args, "--no-cache")
			}
			if tc.push {
				// A push attaches provenance by default, and the names at
				// the registry then point at an index of the image and its
				// attestation manifest (TestCLIAttestations): here the
				// image alone is compared.
				args = append(args, "--provenance=false")
			}
			out, code := cli(t, args...)
			if code != 0 {
				t.Fatalf("build: exit %d\n%s", code, out)
			}
			m := summary.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no image summary line:\n%s", out)
			}
			printed := m[1]
			iid, _ := os.ReadFile(filepath.Join(dir, "iid"))
			var meta map[string]any
			b, _ := os.ReadFile(filepath.Join(dir, "meta.json"))
			if err := json.Unmarshal(b, &meta); err != nil {
				t.Fatalf("metadata: %v\n%s", err, b)
			}
			local := strings.TrimSpace(stdout(t, "--root", root, "inspect", "-f", "{{.Digest}}", tag))
			got := map[string]string{"printed": printed, "iidfile": string(iid), "metadata": meta["containerimage.digest"].(string), "local tag": local}
			if tc.push {
				got["pushed"] = strings.TrimSpace(stdout(t, "--root", root, "inspect", "-f", "{{.Digest}}", "docker://"+tag))
			}
			for what, d := range got {
				if d != local {
					t.Errorf("%s is %s, the local tag %s: %v", what, d, local, got)
				}
			}
			mt := stdout(t, "--root", root, "inspect", "-f", "{{.MediaType}} {{range .Layers}}{{.MediaType}} {{end}}", tag)
			want := map[string]string{"zstd": "zstd", "dockertypes": "docker", "uncompressed-oci-first": "tar ", "registry-zstd": "zstd", "registry-dockertypes": "docker"}[tc.name]
			if !strings.Contains(mt, want) {
				t.Errorf("the local tag's media types %q lack %q", mt, want)
			}
		})
	}
}

package build

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"builder/build/buildtest"
)

// TestSBOMScanner ports BuildKit's testSBOMScannerImage and
// testSBOMScannerArgs (frontend/dockerfile/dockerfile_test.go, v0.26.2):
// generator images built from testdata/builds/sbom write in-toto statements
// into $BUILDKIT_SCAN_DESTINATION, under any file name, and the SBOMs are
// their SPDX predicates; the extras are the context and the stages that
// BUILDKIT_SBOM_SCAN_CONTEXT and BUILDKIT_SBOM_SCAN_STAGE ask for. The
// counts were checked on buildkitd v0.26.2 (buildctl --opt
// attest:sbom=generator=…: the attestation manifest's layers).
func TestSBOMScanner(t *testing.T) {
	buildtest.RequireRoot(t)
	f := newFixture(t)
	for _, g := range []string{"scanner-image", "scanner-args"} {
		f.mustBuild(copyCase(t, "builds/sbom/"+g), func(o *Options) { o.Tags = []string{"sbom-" + g} })
	}
	for _, tc := range []struct {
		name, target, generator string
		args                    map[string]string
		want                    []string // the predicates' "name", sorted
	}{
		{"image", "target-image", "scanner-image", nil, []string{"sbom-scan"}},
		{"args-none", "target-args", "scanner-args", map[string]string{"BUILDKIT_SBOM_SCAN_CONTEXT": "true", "BUILDKIT_SBOM_SCAN_STAGE": "true"},
			[]string{"core"}},
		{"args-stages", "target-args-stages", "scanner-args", nil, []string{"core", "extra", "extra", "extra"}},
		{"args-stages-off", "target-args-stages", "scanner-args", map[string]string{"BUILDKIT_SBOM_SCAN_CONTEXT": "false", "BUILDKIT_SBOM_SCAN_STAGE": "false"},
			[]string{"core"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyCase(t, "builds/sbom/"+tc.target)
			var opts Options
			res, log := f.mustBuild(dir, func(o *Options) {
				maps.Copy(o.BuildArgs, tc.args)
				opts = *o
			})
			docs, err := f.b.ScanSBOM(context.Background(), res, "sbom-"+tc.generator, opts)
			if err != nil {
				t.Fatalf("scan: %v\nlog:\n%s", err, log)
			}
			var got []string
			for _, n := range slices.Sorted(maps.Keys(docs)) {
				var p struct {
					Name string `json:"name"`
				}
				if err := json.Unmarshal(docs[n], &p); err != nil {
					t.Fatalf("%s: %v: %s", n, err, docs[n])
				}
				got = append(got, p.Name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("SBOM predicates named %q, want %q", got, tc.want)
			}
		})
	}
}

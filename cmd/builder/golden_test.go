package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"builder/build/buildtest"
)

// The goldens hold an amd64 image (the platform is in the config and so in
// every digest), as CI builds it.

// ages are the CREATED columns and fields, which depend on the clock.
var ages = regexp.MustCompile(`\b(\d+ (year|month|day|hour|minute)s?|seconds) ago\b`)

// columnGaps are tabwriter's runs of spaces, whose width follows the masked
// ages.
var columnGaps = regexp.MustCompile(` {2,}`)

// TestCLIGolden compares images, history and inspect of a reproducible
// image (FROM scratch, SOURCE_DATE_EPOCH) with golden outputs under
// testdata/golden, the ages masked. go test -run TestCLIGolden -update
// rewrites them.
func TestCLIGolden(t *testing.T) {
	buildtest.RequireRoot(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM scratch\nCOPY hi.txt /hi.txt\nENV GREETING=hello\nLABEL org.example.team=builders\nCMD [\"/hi.txt\"]\n",
		map[string]string{"hi.txt": "hello, golden\n"})
	if out, code := cli(t, "--root", root, "build", "-q", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-t", "golden:1", "-t", "example.com/team/golden:2", ctx); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	for _, tc := range []struct {
		golden string
		table  bool // tabwriter columns
		args   []string
	}{
		{"images.golden", true, []string{"images"}},
		{"images-digests.golden", true, []string{"images", "--digests", "--no-trunc"}},
		{"images-json.golden", false, []string{"images", "--format", "json"}},
		{"images-template.golden", false, []string{"images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}", "--filter", "label=org.example.team=builders", "--filter", "reference=*/*/golden"}},
		{"images-quiet.golden", false, []string{"images", "-q"}},
		{"history.golden", true, []string{"history", "golden:1"}},
		{"history-template.golden", false, []string{"history", "--format", "{{.ID}}|{{.Size}}|{{.CreatedBy}}|{{.CreatedAt}}", "golden:1"}},
		{"inspect.golden", false, []string{"inspect", "golden:1"}},
		{"inspect-two.golden", false, []string{"inspect", "-f", "{{.Id}} {{join .RepoTags \",\"}} {{.Os}}/{{.Architecture}} {{len .RootFS.Layers}}", "golden:1", "example.com/team/golden:2"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			got := stdout(t, append([]string{"--root", root}, tc.args...)...)
			got = ages.ReplaceAllString(got, "<age>")
			if tc.table {
				got = columnGaps.ReplaceAllString(got, "  ")
			}
			p := filepath.Join("testdata", "golden", tc.golden)
			if *updateGolden {
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, []byte(got), 0o644)
			}
			want, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("builder %q =\n%s\nwant (%s)\n%s", tc.args, got, p, want)
			}
		})
	}
}

package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"builder/build/buildtest"
)

// lintBaseImage is an image for the base image checks: one random layer,
// a config of linux/arch with env.
func lintBaseImage(t *testing.T, arch string, env ...string) v1.Image {
	t.Helper()
	l, err := random.Layer(512, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config.Env = "linux", arch, env
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// storeWith returns a store root holding images under the names given,
// pulled from a loopback registry and tagged: --check finds them there
// and asks no registry.
func storeWith(t *testing.T, images map[string]v1.Image) string {
	t.Helper()
	root := t.TempDir()
	reg := buildtest.Registry(t)
	for name, img := range images {
		ref := reg + "/seed/" + strings.NewReplacer(":", "-", "/", "-").Replace(name) + ":1"
		buildtest.Push(t, ref, img)
		for _, args := range [][]string{{"pull", ref}, {"tag", ref, name}} {
			if out, code := cli(t, append([]string{"--root", root}, args...)...); code != 0 {
				t.Fatalf("%v: exit %d\n%s", args, code, out)
			}
		}
	}
	return root
}

// TestCLICheckBaseImages runs --check on Dockerfiles whose checks need the
// base images' configs, from a loopback registry: UndefinedVar (not for
// what the base image's ENV defines; a typo with BuildKit's suggestion)
// and InvalidBaseImagePlatform, as BuildKit's check reports them
// (testdata/check/basevars*/check.golden, with the registry's address as
// REGISTRY). The check fetches the configs, never a layer; a base that
// cannot be resolved ends it with an error at its FROM line.
func TestCLICheckBaseImages(t *testing.T) {
	reg := buildtest.Registry(t)
	base := lintBaseImage(t, "amd64", "PATH=/usr/local/bin:/usr/bin:/bin", "GOPATH=/go", "APP_VERSION=1.2")
	foreign := lintBaseImage(t, "s390x", "PATH=/usr/bin:/bin")
	buildtest.Push(t, reg+"/lint/base:1", base)
	buildtest.Push(t, reg+"/lint/foreign:1", foreign)
	var layers []v1.Hash
	for _, img := range []v1.Image{base, foreign} {
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		d, err := ls[0].Digest()
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, d)
	}
	for _, c := range []struct {
		dir    string
		args   []string
		code   int
		golden string
		want   []string
	}{
		{"basevars", nil, 1, "check.golden", []string{"Check complete, 5 warnings have been found!"}},
		{"basevars", []string{"--call", "check,format=json"}, 1, "", []string{`"ruleName": "InvalidBaseImagePlatform"`, `"detail": "Usage of undefined variable '$GOPTAH' (did you mean $GOPATH?)"`}},
		// With a target, only the stages it needs are checked, as BuildKit.
		{"basevars", []string{"--target", "build"}, 1, "", []string{"Check complete, 3 warnings have been found!", "$GOPTAH"}},
		{"basevars-clean", nil, 0, "", []string{"Check complete, no warnings found."}},
	} {
		t.Run(c.dir+strings.Join(c.args, "_"), func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join("testdata", "check", c.dir)
			args := []string{"--root", root, "build", "--platform", "linux/amd64", "--build-arg", "REGISTRY=" + reg}
			if !slices.Contains(c.args, "--call") {
				args = append(args, "--check")
			}
			out, code := cli(t, append(append(args, c.args...), dir)...)
			out = strings.ReplaceAll(out, reg, "REGISTRY")
			if code != c.code {
				t.Errorf("exit %d, want %d\n%s", code, c.code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if c.golden != "" && *updateGolden {
				stdout, _, _ := strings.Cut(out, "ERROR: ")
				if err := os.WriteFile(filepath.Join(dir, c.golden), []byte(stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if c.golden != "" {
				want, err := os.ReadFile(filepath.Join(dir, c.golden))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(out, string(want)) {
					t.Errorf("output:\n%s\nwant (testdata/check/%s/%s):\n%s", out, c.dir, c.golden, want)
				}
				// The warnings are BuildKit's, byte for byte (see the README).
				bk, err := os.ReadFile(filepath.Join(dir, "buildkit.txt"))
				if err != nil {
					t.Fatal(err)
				}
				if _, body, _ := strings.Cut(string(want), "\n\n"); body != string(bk) {
					t.Errorf("%s differs from BuildKit's result, testdata/check/%s/buildkit.txt", c.golden, c.dir)
				}
			}
			// Configs only: no layer blob was fetched.
			filepath.WalkDir(root, func(p string, _ os.DirEntry, _ error) error {
				for _, l := range layers {
					if strings.Contains(p, l.Hex) {
						t.Errorf("--check fetched layer %s", p)
					}
				}
				return nil
			})
		})
	}

	t.Run("unresolvable", func(t *testing.T) {
		ctx := writeCase(t, "FROM scratch AS ok\nENV A=$NOPE\nFROM "+reg+"/lint/missing:1\nCOPY --from=ok / /\n", map[string]string{})
		out, code := cli(t, "--root", t.TempDir(), "build", "--check", ctx)
		if code != 1 || !strings.Contains(out, "Dockerfile:3") || !strings.Contains(out, reg+"/lint/missing:1: pull ") ||
			!strings.Contains(out, ">>> FROM "+reg+"/lint/missing:1") || strings.Contains(out, "no warnings found") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})

	t.Run("stored", func(t *testing.T) {
		// A stored base is used as the build would (no --pull): the check
		// needs no registry, as --pull=never shows.
		root := storeWith(t, map[string]v1.Image{"example.com/lint/base:1": base})
		ctx := writeCase(t, "FROM example.com/lint/base:1\nLABEL v=$APP_VERSION w=$APP_VERSON\n", map[string]string{})
		out, code := cli(t, "--root", root, "build", "--check", "--pull=never", "--platform", "linux/amd64", ctx)
		if code != 1 || !strings.Contains(out, "Usage of undefined variable '$APP_VERSON' (did you mean $APP_VERSION?)") ||
			!strings.Contains(out, "Check complete, 1 warning has been found!") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})
}

// TestCLIBuildBaseWarnings: a build lists the base image checks' warnings
// after it, as buildx lists BuildKit's, without asking the registry again.
func TestCLIBuildBaseWarnings(t *testing.T) {
	buildtest.RequireRoot(t)
	reg := buildtest.Registry(t)
	buildtest.Push(t, reg+"/lint/base:1", lintBaseImage(t, hostArch(), "PATH=/usr/bin:/bin", "GOPATH=/go"))
	df := "FROM " + reg + "/lint/base:1\nLABEL a=$GOPATH b=$GOPTAH\n# check=skip=UndefinedVar\nLABEL c=$SKIPPED\n"
	out, code := cli(t, "--root", t.TempDir(), "build", "--progress", "plain", writeCase(t, df, map[string]string{}))
	if code != 0 || !strings.Contains(out, "1 warning found") ||
		!strings.Contains(out, "UndefinedVar: Usage of undefined variable '$GOPTAH' (did you mean $GOPATH?) (line 2)") ||
		strings.Contains(out, "variable '$SKIPPED") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	// # check=error=true: the base image checks stop the build before its
	// first step, as the others do.
	df = "# check=error=true\nFROM " + reg + "/lint/base:1\nRUN true\nLABEL b=$GOPTAH\n"
	out, code = cli(t, "--root", t.TempDir(), "build", "--progress", "plain", writeCase(t, df, map[string]string{}))
	if code == 0 || !strings.Contains(out, "lint violation found for rules: UndefinedVar") || strings.Contains(out, "] RUN true") {
		t.Errorf("check=error=true: exit %d:\n%s", code, out)
	}
}

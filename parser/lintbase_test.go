package parser

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// TestLintBases runs UndefinedVar and InvalidBaseImagePlatform on the
// Dockerfiles under testdata/lintbase with the stage bases a build would
// resolve, and compares the warnings with each case's want.txt.
func TestLintBases(t *testing.T) {
	image := func(env ...string) StageBase { return StageBase{Parent: -1, Env: env} }
	golang := image("PATH=/go/bin:/usr/bin", "GOPATH=/go", "APP_HOME=app")
	foreign := StageBase{Parent: -1, Env: []string{"PATH=/bin"}, OtherPlatform: true, Name: "foreign",
		Expected: "linux/amd64", Actual: "linux/s390x"}
	for _, tc := range []struct {
		dir       string
		bases     map[int]StageBase
		buildArgs map[string]string
	}{
		{"env", map[int]StageBase{0: golang}, nil},
		{"stages", map[int]StageBase{0: image("PATH=/bin"), 1: {Parent: 0}, 2: image(), 3: image("BASE_ONLY=1")}, nil},
		{"platform", map[int]StageBase{0: foreign, 1: image()}, nil},
		{"skip", map[int]StageBase{0: foreign}, nil},
		{"unknown", map[int]StageBase{0: {Parent: -1, Unknown: true}, 1: {Parent: 0}}, nil},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("testdata", "lintbase", tc.dir)
			g, err := parseFile(t, filepath.Join(dir, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			before := len(g.Warnings)
			var stages []int
			for i := range g.Stages {
				stages = append(stages, i)
			}
			g.LintBases(BaseLint{Stages: stages, Bases: tc.bases, BuildArgs: tc.buildArgs,
				Global: shell.EnvsFromSlice([]string{"GLOBAL=g", "TARGETARCH=amd64"})})
			var got []string
			for _, w := range g.Warnings {
				if w.Rule == "UndefinedVar" || w.Rule == "InvalidBaseImagePlatform" {
					got = append(got, w.String())
				}
			}
			if len(g.Warnings)-before != len(got) {
				t.Errorf("%d warnings before, %d after, %d of the base rules", before, len(g.Warnings), len(got))
			}
			want, err := os.ReadFile(filepath.Join(dir, "want.txt"))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := strings.Join(got, "\n"), strings.TrimSpace(string(want)); g != w {
				t.Errorf("warnings:\n%s\nwant (%s/want.txt):\n%s", g, dir, w)
			}
		})
	}
}

// TestLintBasesBuildArgs: a --build-arg value defines an ARG without
// default, so what it feeds is defined.
func TestLintBasesBuildArgs(t *testing.T) {
	g, err := Parse("Dockerfile", strings.NewReader("FROM base\nARG FROM_CLI\nENV X=$FROM_CLI Y=$NOT_SET\nLABEL x=$X\n"))
	if err != nil {
		t.Fatal(err)
	}
	g.LintBases(BaseLint{Stages: []int{0}, Bases: map[int]StageBase{0: {Parent: -1}}, BuildArgs: map[string]string{"FROM_CLI": "v"}})
	if len(g.Warnings) != 1 || g.Warnings[0].String() != "Dockerfile:3: UndefinedVar: Usage of undefined variable '$NOT_SET'" {
		t.Errorf("warnings %v", g.Warnings)
	}
}

// TestLintBasesHostile: a stage list or bases that do not match the
// Dockerfile (a stage missing from Bases, a parent not checked) are
// skipped, never a panic.
func TestLintBasesHostile(t *testing.T) {
	g, err := Parse("Dockerfile", strings.NewReader("FROM a AS one\nENV A=$X\nFROM one\nENV B=$Y\n"))
	if err != nil {
		t.Fatal(err)
	}
	g.LintBases(BaseLint{Stages: []int{1}, Bases: map[int]StageBase{1: {Parent: 0}}})
	g.LintBases(BaseLint{Stages: []int{0, 1}, Bases: map[int]StageBase{}})
	if len(g.Warnings) != 0 {
		t.Errorf("warnings %v", g.Warnings)
	}
}

// TestLintBasesBombs: values that double with each ARG and ENV, and a base
// image with a huge environment, are walked with bounded values: the
// check ends, and still finds the one undefined variable.
func TestLintBasesBombs(t *testing.T) {
	var df strings.Builder
	df.WriteString("FROM base\nARG A0=0123456789abcdef\n")
	for i := 1; i <= 60; i++ {
		fmt.Fprintf(&df, "ARG A%d=$A%d$A%d\nENV E%d=$A%d$A%d$E%d\n", i, i-1, i-1, i, i, i, i-1)
	}
	df.WriteString("LABEL x=$A60$E60$MISSING\n")
	g, err := Parse("Dockerfile", strings.NewReader(df.String()))
	if err != nil {
		t.Fatal(err)
	}
	env := make([]string, 100000)
	for i := range env {
		env[i] = fmt.Sprintf("BASE_%d=%s", i, strings.Repeat("v", 64))
	}
	g.LintBases(BaseLint{Stages: []int{0}, Bases: map[int]StageBase{0: {Parent: -1, Env: env}}})
	var got []string
	for _, w := range g.Warnings {
		if w.Rule == "UndefinedVar" {
			got = append(got, w.String())
		}
	}
	want := fmt.Sprintf("Dockerfile:%d: UndefinedVar: Usage of undefined variable '$MISSING'", 2+2*60+1)
	// E1's $E0 is the one other undefined name.
	if len(got) != 2 || got[0] != "Dockerfile:4: UndefinedVar: Usage of undefined variable '$E0' (did you mean $A0?)" || got[1] != want {
		t.Errorf("warnings %q", got)
	}
}

// TestInvalidDefaultArgInFrom: a base name that the global ARGs' defaults
// turn into something distribution's reference parser refuses is
// BuildKit's InvalidDefaultArgInFrom, "/app:1" (an ARG without default
// before a path) included, which go-containerregistry's parser accepts.
func TestInvalidDefaultArgInFrom(t *testing.T) {
	for _, tc := range []struct {
		df   string
		want bool
	}{
		{"ARG REGISTRY\nFROM $REGISTRY/app:1\n", true},
		{"ARG REGISTRY=registry.example\nFROM $REGISTRY/app:1\n", false},
		{"ARG TAG\nFROM app:$TAG\n", true},
		{"ARG TAG=1\nFROM app:$TAG\n", false},
		{"ARG NAME=Upper\nFROM $NAME\n", true},
		{"ARG PATH_=a//b\nFROM $PATH_\n", true},
		{"FROM app@sha256:" + strings.Repeat("a", 64) + "\n", false},
	} {
		g, err := Parse("Dockerfile", strings.NewReader(tc.df))
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for _, w := range g.Warnings {
			got = got || w.Rule == "InvalidDefaultArgInFrom"
		}
		if got != tc.want {
			t.Errorf("%q: InvalidDefaultArgInFrom %v, want %v (%v)", tc.df, got, tc.want, g.Warnings)
		}
	}
}

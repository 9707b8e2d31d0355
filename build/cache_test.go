package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"builder/build/buildtest"
)

// missReasons maps each step of a progress log (by its instruction text)
// to the cache-miss explanation printed for it.
func missReasons(log string) map[string]string {
	instr := map[string]string{}
	out := map[string]string{}
	for _, l := range strings.Split(log, "\n") {
		f := strings.SplitN(l, " ", 3)
		if len(f) < 3 || !strings.HasPrefix(f[0], "#") {
			continue
		}
		if strings.HasPrefix(f[1], "[") {
			if _, text, ok := strings.Cut(f[2], "] "); ok {
				instr[f[0]] = text
			}
			continue
		}
		if _, reason, ok := strings.Cut(f[2], "cache miss: "); ok {
			out[instr[f[0]]] = reason
		}
	}
	return out
}

// TestExplainCache changes one input at a time and checks the reason
// printed for every step that misses, and that hits print none.
func TestExplainCache(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/explain")
	src := filepath.Join(dir, "context", "src")
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A second base image: busybox with a label, so another config digest.
	img := buildtest.BusyboxImage(t)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{"variant": "two"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	base2 := strings.TrimSuffix(f.base, ":latest") + ":two"
	buildtest.Push(t, base2, img)
	const (
		copyStep = "COPY src/ /src/"
		runV     = `RUN echo "$V" > /v`
		runT     = "RUN echo text > /t"
	)
	cases := []struct {
		name   string
		change func()
		args   map[string]string
		noCach bool
		want   map[string]string // step → substring of its reason; steps not named must hit
	}{
		{name: "first build", want: map[string]string{
			copyStep: "no earlier build", runV: "no earlier build", runT: "no earlier build"}},
		{name: "rebuild hits", want: map[string]string{}},
		{name: "build arg", args: map[string]string{"V": "two"}, want: map[string]string{
			// Every RUN sees the build args in its environment.
			runV: `build arg V changed: value `, runT: `build arg V changed`}},
		{name: "changed file", args: map[string]string{"V": "two"}, change: func() { write("a.txt", "A\n") }, want: map[string]string{
			copyStep: "source files changed src/a.txt", runV: "parent step changed", runT: "parent step changed"}},
		{name: "added file", args: map[string]string{"V": "two"}, change: func() { write("c.txt", "c\n") }, want: map[string]string{
			copyStep: "source files added src/c.txt", runV: "parent step changed", runT: "parent step changed"}},
		{name: "removed file", args: map[string]string{"V": "two"}, change: func() { os.Remove(filepath.Join(src, "b.txt")) }, want: map[string]string{
			copyStep: "source files removed src/b.txt", runV: "parent step changed", runT: "parent step changed"}},
		{name: "instruction text", args: map[string]string{"V": "two"}, change: func() {
			df := filepath.Join(dir, "Dockerfile")
			dt, _ := os.ReadFile(df)
			os.WriteFile(df, []byte(strings.Replace(string(dt), "echo text", "echo words", 1)), 0o644)
		}, want: map[string]string{"RUN echo words > /t": `instruction changed: was "RUN echo text > /t"`}},
		{name: "no-cache", args: map[string]string{"V": "two"}, noCach: true, want: map[string]string{
			copyStep: "--no-cache", runV: "--no-cache", "RUN echo words > /t": "--no-cache"}},
		{name: "base image", args: map[string]string{"V": "two", "BASE": base2}, want: map[string]string{
			copyStep: "base image changed: config sha256:", runV: "parent step changed", "RUN echo words > /t": "parent step changed"}},
	}
	for _, c := range cases {
		if c.change != nil {
			c.change()
		}
		_, log := f.mustBuild(dir, func(o *Options) {
			o.ExplainCache = true
			o.NoCache = c.noCach
			for k, v := range c.args {
				o.BuildArgs[k] = v
			}
		})
		got := missReasons(log)
		for step, want := range c.want {
			if !strings.Contains(got[step], want) {
				t.Errorf("%s: %s: reason %q, want it to contain %q", c.name, step, got[step], want)
			}
		}
		for step, reason := range got {
			if _, ok := c.want[step]; !ok {
				t.Errorf("%s: %s: unexpected miss: %s", c.name, step, reason)
			}
		}
		if t.Failed() {
			t.Fatalf("log of %s:\n%s", c.name, log)
		}
	}
}

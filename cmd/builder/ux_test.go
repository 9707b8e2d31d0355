package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"builder/build/buildtest"
)

// stdout runs builder and returns its standard output alone.
func stdout(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("builder %q: %v\n%s%s", args, err, out.String(), errb.String())
	}
	return out.String()
}

// TestCLIReferenceUpToDate fails when docs/cli.md no longer matches the
// flag definitions. Regenerate it with: go run ./cmd/builder docs > docs/cli.md
func TestCLIReferenceUpToDate(t *testing.T) {
	got := stdout(t, "docs")
	want, err := os.ReadFile(filepath.Join("..", "..", "docs", "cli.md"))
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("docs/cli.md is out of date; run: go run ./cmd/builder docs > docs/cli.md")
	}
	for _, c := range commands {
		if c.hidden {
			if strings.Contains(got, "## builder "+c.name+"\n") {
				t.Errorf("hidden command %s is in the reference", c.name)
			}
			continue
		}
		if !strings.Contains(got, "## builder "+c.name+"\n") {
			t.Errorf("command %s is missing from the reference", c.name)
		}
	}
	if !strings.Contains(got, "--progress string") || !strings.Contains(got, "--format string") {
		t.Errorf("the reference lacks flags it should list")
	}
}

// TestCLIHelp checks that every command answers --help with its usage and
// exit status 0, and shows examples.
func TestCLIHelp(t *testing.T) {
	for _, c := range commands {
		if c.name == "version" {
			continue
		}
		out, code := cli(t, c.name, "--help")
		if code != 0 || !strings.HasPrefix(out, "Usage") {
			t.Errorf("builder %s --help: exit %d\n%s", c.name, code, out)
		}
		if !strings.Contains(out, "Examples:") {
			t.Errorf("builder %s --help shows no examples", c.name)
		}
	}
}

func TestCLICompletion(t *testing.T) {
	bash := stdout(t, "completion", "bash")
	for _, c := range []struct {
		words string
		cword int
		want  []string
	}{
		{"builder ins", 1, []string{"inspect"}},
		{"builder --root /x hi", 3, []string{"history"}},
		{"builder build --no-c", 2, []string{"--no-cache", "--no-cache-filter"}},
		{"builder inspect --f", 2, []string{"--format"}},
		{"builder completion f", 2, []string{"fish"}},
	} {
		script := bash + "\nCOMP_WORDS=(" + c.words + "); COMP_CWORD=" + itoa(c.cword) + "; _builder; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command("bash", "--norc", "-c", script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		got := strings.Fields(string(out))
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("complete %q = %q, want %q", c.words, got, c.want)
		}
	}
	for _, sh := range []string{"zsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			script := stdout(t, "completion", sh)
			if !strings.Contains(script, "inspect") || !strings.Contains(script, "no-cache") {
				t.Errorf("%s completion lacks commands or flags", sh)
			}
			shell := buildtest.RequireTool(t, sh) // .ci/run installs both shells
			f := filepath.Join(t.TempDir(), "completion")
			if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(shell, "-n", f).CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", sh, err, out)
			}
			if sh == "zsh" {
				// The script must register _builder with compinit's compdef.
				out, err := exec.Command(shell, "-f", "-c", "autoload -Uz compinit && compinit -u -D && source "+f+" && print -r -- ${_comps[builder]}").CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != "_builder" {
					t.Errorf("zsh does not map builder to _builder: %v\n%s", err, out)
				}
				// Stubs stand in for the completion system's builtins and print
				// the candidates _builder offers.
				stubs := `compdef() { : }
_describe() { print -l -- ${(P)2} }
compadd() { [[ $1 == -- ]] && shift; print -l -- "$@" }
_values() { shift; print -l -- "$@" }
_files() { print FILES }
source ` + f + "\n"
				for _, c := range []struct{ words, want string }{
					{"builder ins", "inspect:Show an image's config, layers and the steps that made them"},
					{"builder --root /x his", "history:Show the steps that made an image"},
					{"builder build --no-c", "--no-cache[do not use the cache]"},
					{"builder --snapshotter naive completion z", "zsh"},
					{"builder build ./ctx", "FILES"},
				} {
					words := strings.Fields(c.words)
					script := stubs + "words=(" + c.words + "); CURRENT=" + itoa(len(words)) + "; PREFIX=" + words[len(words)-1] + "; _builder"
					out, err := exec.Command(shell, "-f", "-c", script).CombinedOutput()
					if err != nil || !contains(strings.Split(string(out), "\n"), c.want) {
						t.Errorf("zsh: complete %q offers no %q (%v):\n%s", c.words, c.want, err, out)
					}
				}
				return
			}
			// fish answers completions non-interactively with complete -C.
			for line, want := range map[string]string{
				"builder ins":                "inspect",
				"builder build --no-cache-f": "--no-cache-filter",
				"builder completion z":       "zsh",
				"builder --root /x his":      "history",
			} {
				out, err := exec.Command(shell, "--no-config", "-c", "source "+f+"; complete -C '"+line+"'").CombinedOutput()
				var got []string
				for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					got = append(got, strings.SplitN(l, "\t", 2)[0])
				}
				if err != nil || strings.Join(got, " ") != want {
					t.Errorf("fish: complete %q = %q (%v), want %q", line, got, err, want)
				}
			}
		})
	}
	if _, code := cli(t, "completion", "tcsh"); code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", code)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestCLIInspectHistoryTag builds an image and reads it back with
// inspect (JSON and template), history and tag.
func TestCLIInspectHistoryTag(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nCOPY hi.txt /hi.txt\nENV GREETING=hello\nRUN echo made > /made\nCMD [\"cat\", \"/hi.txt\"]\n",
		map[string]string{"hi.txt": "hi\n"})
	out, code := cli(t, "--root", root, "build", "--progress=json", "-t", "app:1", ctx)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	// json: every line is an event; the five steps start and finish.
	status := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Step   int
			Status string
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("--progress=json printed a line that is not JSON: %q", l)
		}
		status[ev.Status]++
	}
	if status["started"] != 5 || status["done"] != 5 || status["info"] == 0 {
		t.Errorf("json events by status: %v", status)
	}
	if out, code := cli(t, "--root", root, "build", "--progress=fancy", ctx); code != 2 {
		t.Errorf("--progress=fancy: exit %d, want 2\n%s", code, out)
	}

	var infos []imageInfo
	if err := json.Unmarshal([]byte(stdout(t, "--root", root, "inspect", "app:1")), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("inspect is not a JSON array of one image: %v", err)
	}
	info := infos[0]
	if info.Name != "app:1" || !strings.HasPrefix(info.Digest, "sha256:") || info.Os != "linux" {
		t.Errorf("inspect: name %q digest %q os %q", info.Name, info.Digest, info.Os)
	}
	if strings.Join(info.Config.Cmd, " ") != "cat /hi.txt" || !contains(info.Config.Env, "GREETING=hello") {
		t.Errorf("inspect config: cmd %q env %q", info.Config.Cmd, info.Config.Env)
	}
	if len(info.Layers) != 3 {
		t.Fatalf("inspect: %d layers, want 3 (base, COPY, RUN): %+v", len(info.Layers), info.Layers)
	}
	var sum int64
	for _, l := range info.Layers {
		if l.Size <= 0 || !strings.HasPrefix(l.DiffID, "sha256:") {
			t.Errorf("layer %+v lacks a size or diff ID", l)
		}
		sum += l.Size
	}
	if info.Size <= sum {
		t.Errorf("image size %d is not more than its layers' %d", info.Size, sum)
	}
	if !strings.Contains(info.Layers[1].CreatedBy, "COPY hi.txt /hi.txt") || !strings.Contains(info.Layers[2].CreatedBy, "echo made") {
		t.Errorf("layers not matched to their steps: %q, %q", info.Layers[1].CreatedBy, info.Layers[2].CreatedBy)
	}

	got := stdout(t, "--root", root, "inspect", "--format", "{{.Digest}} {{len .Layers}} {{json .Config.Cmd}}", "app:1")
	if want := info.Digest + " 3 [\"cat\",\"/hi.txt\"]\n"; got != want {
		t.Errorf("inspect --format = %q, want %q", got, want)
	}
	if out, code := cli(t, "--root", root, "inspect", "--format", "{{.Nope", "app:1"); code != 2 {
		t.Errorf("bad template: exit %d, want 2\n%s", code, out)
	}
	if out, code := cli(t, "--root", root, "inspect", "missing"); code != 1 || !strings.Contains(out, "not in the local store") {
		t.Errorf("inspect missing: exit %d\n%s", code, out)
	}

	hist := stdout(t, "--root", root, "history", "app:1")
	lines := strings.Split(strings.TrimSpace(hist), "\n")
	if !strings.HasPrefix(lines[0], "LAYER") || len(lines) < 5 {
		t.Fatalf("history:\n%s", hist)
	}
	// Newest first: CMD (no layer), RUN (a layer), ENV (no layer), COPY (a layer).
	for i, re := range []string{`^<none> .*CMD`, `^[0-9a-f]{12} .*echo made`, `^<none> .*GREETING=hello`, `^[0-9a-f]{12} .*COPY hi.txt`} {
		if !regexp.MustCompile(re).MatchString(lines[i+1]) {
			t.Errorf("history line %d = %q, want %s", i+1, lines[i+1], re)
		}
	}
	if q := strings.Fields(stdout(t, "--root", root, "history", "-q", "app:1")); len(q) < 4 || q[1] != info.Layers[2].Digest {
		t.Errorf("history -q = %q", q)
	}

	if out, code := cli(t, "--root", root, "tag", "app:1", "app:stable", "example.com/team/app:2"); code != 0 {
		t.Fatalf("tag: exit %d\n%s", code, out)
	}
	images := stdout(t, "--root", root, "images", "--format", "{{.Name}}")
	for _, n := range []string{"docker.io/library/app:1", "docker.io/library/app:stable", "example.com/team/app:2"} {
		if !strings.Contains(images, n+"\n") {
			t.Errorf("images lacks %s:\n%s", n, images)
		}
	}
	if d := stdout(t, "--root", root, "inspect", "-f", "{{.Digest}}", "example.com/team/app:2"); d != info.Digest+"\n" {
		t.Errorf("tagged image digest %q, want %s", d, info.Digest)
	}
	if out, code := cli(t, "--root", root, "tag", "nope", "x"); code != 1 {
		t.Errorf("tag of a missing image: exit %d\n%s", code, out)
	}
	if out, code := cli(t, "--root", root, "tag", "app:1"); code != 2 {
		t.Errorf("tag without a target: exit %d\n%s", code, out)
	}
}

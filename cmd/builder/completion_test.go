package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"builder/build/buildtest"
)

// TestCLICompletionValuesAndNames: in bash, zsh and fish, enumerated flags
// complete their values, and image arguments complete the short and full
// names of the store a --root on the command line names.
func TestCLICompletionValuesAndNames(t *testing.T) {
	buildtest.RequireRoot(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM scratch\nCOPY hi.txt /hi.txt\n", map[string]string{"hi.txt": "hi\n"})
	if out, code := cli(t, "--root", root, "build", "-q", "-t", "compl:1", "-t", "example.com/team/compl:2", ctx); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	// The scripts call builder by name: put this one first on PATH.
	bin := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(bin, "builder")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	cases := []struct {
		line string // the command line; the last word is completed
		want []string
	}{
		{"builder build --progress pl", []string{"plain"}},
		{"builder build --network ", []string{"default", "none", "host"}},
		{"builder build --isolation ch", []string{"chroot"}},
		{"builder build -o type=o", []string{"type=oci"}},
		{"builder save --format oci", []string{"oci-archive"}},
		{"builder --snapshotter na", []string{"naive"}},
		{"builder --root " + root + " inspect comp", []string{"compl:1"}},
		{"builder inspect --root " + root + " example.com/", []string{"example.com/team/compl:2"}},
		{"builder --root " + root + " rmi docker.io/library/c", []string{"docker.io/library/compl:1"}},
		{"builder --root " + t.TempDir() + " inspect comp", nil},
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		shell := buildtest.RequireTool(t, sh)
		script := filepath.Join(t.TempDir(), "completion")
		if err := os.WriteFile(script, []byte(stdout(t, "completion", sh)), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			got := completeIn(t, sh, shell, script, c.line)
			for _, w := range c.want {
				if !slices.Contains(got, w) {
					t.Errorf("%s: complete %q = %q, want %q among them", sh, c.line, got, w)
				}
			}
			if c.want == nil && slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "compl") }) {
				t.Errorf("%s: complete %q offers another store's images: %q", sh, c.line, got)
			}
		}
	}
}

// completeIn returns what the completion script offers for line in shell.
func completeIn(t *testing.T, sh, shell, script, line string) []string {
	t.Helper()
	words := strings.Fields(line)
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	cur := words[len(words)-1]
	var cmd *exec.Cmd
	switch sh {
	case "bash":
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		cmd = exec.Command(shell, "--norc", "-c", "source "+script+"\nCOMP_WORDS=("+strings.Join(quoted, " ")+"); COMP_CWORD="+itoa(len(words)-1)+
			"; _builder; printf '%s\\n' \"${COMPREPLY[@]}\"")
	case "zsh":
		stubs := `compdef() { : }
_describe() { print -l -- ${(P)2} }
compadd() { [[ $1 == -- ]] && shift; print -l -- "$@" }
_values() { shift; print -l -- "$@" }
_files() { print FILES }
`
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		cmd = exec.Command(shell, "-f", "-c", stubs+"source "+script+"\nwords=("+strings.Join(quoted, " ")+"); CURRENT="+itoa(len(words))+"; PREFIX='"+cur+"'; _builder")
	case "fish":
		cmd = exec.Command(shell, "--no-config", "-c", "source "+script+"; complete -C '"+line+"'")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", sh, err, out)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		l = strings.SplitN(l, "\t", 2)[0]
		// zsh's stubs print every candidate; keep those the word starts.
		if l != "" && strings.HasPrefix(l, cur) {
			got = append(got, l)
		}
	}
	return got
}

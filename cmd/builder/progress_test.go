package main

import (
	"regexp"
	"strings"
	"testing"

	"builder/build/buildtest"
)

// TestCLIProgressRoughEdges: metadata steps are not CACHED on a first
// build but are on a rebuild; --explain-cache=false silences plain mode;
// the builder's cache-miss note is not shown as the failed command's
// output; --progress=tty into a pipe writes no escape codes.
func TestCLIProgressRoughEdges(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nARG A=1\nSHELL [\"/bin/sh\", \"-c\"]\nENV E=1\nRUN echo $A > /a\n", map[string]string{})
	build := func(extra ...string) string {
		t.Helper()
		out, code := cli(t, append([]string{"--root", root, "build", "--progress=plain", "-t", "p:1"}, append(extra, ctx)...)...)
		if code != 0 {
			t.Fatalf("build %q: exit %d\n%s", extra, code, out)
		}
		return out
	}
	first := build()
	if n := strings.Count(first, "CACHED"); n != 0 {
		t.Errorf("first build shows %d steps CACHED:\n%s", n, first)
	}
	if !strings.Contains(first, ", 0 cached") {
		t.Errorf("first build counts cached steps:\n%s", first)
	}
	again := build()
	if n := strings.Count(again, "CACHED"); n != 4 {
		t.Errorf("rebuild shows %d steps CACHED, want 4 (ARG, SHELL, ENV, RUN):\n%s", n, again)
	}
	if quiet := build("--build-arg", "A=2", "--explain-cache=false"); strings.Contains(quiet, "cache miss") {
		t.Errorf("--explain-cache=false still explains:\n%s", quiet)
	}
	if loud := build("--build-arg", "A=3"); !strings.Contains(loud, "cache miss") {
		t.Errorf("plain mode does not explain a miss by default:\n%s", loud)
	}

	fail := writeCase(t, "FROM "+base+"\nRUN echo from-the-command; exit 3\n", map[string]string{})
	cli(t, "--root", root, "build", "--progress=plain", fail)
	// A second failure of the changed step is explained, then fails.
	fail2 := writeCase(t, "FROM "+base+"\nRUN echo from-the-command; exit 4\n", map[string]string{})
	out, code := cli(t, "--root", root, "build", "--progress=plain", "-f", fail2+"/Dockerfile", fail)
	if code != 1 || !strings.Contains(out, "cache miss") {
		t.Fatalf("failing build: exit %d, want 1 with a cache-miss note\n%s", code, out)
	}
	if !strings.Contains(out, "Dockerfile:2\n--------------------\n 1 |     FROM "+base+"\n 2 | >>> RUN echo from-the-command; exit 4\n--------------------\nERROR: Dockerfile:2: ") {
		t.Errorf("no buildx-style snippet before the error:\n%s", out)
	}
	parseErr := writeCase(t, "FROM "+base+"\nFROBNICATE\nRUN true\n", map[string]string{})
	if out, code := cli(t, "--root", root, "build", parseErr); code != 1 || !strings.Contains(out, " 2 | >>> FROBNICATE\n 3 |     RUN true\n") {
		t.Errorf("a parse error: exit %d, no snippet:\n%s", code, out)
	}
	_, report, _ := strings.Cut(out, "ERROR:")
	if !strings.Contains(report, "from-the-command") || strings.Contains(report, "cache miss") {
		t.Errorf("the error report's output lines are not the command's alone:\n%s", report)
	}

	out, code = cli(t, "--root", root, "build", "--progress=tty", "-t", "p:1", ctx)
	if code != 0 || strings.Contains(out, "\x1b[") {
		t.Errorf("--progress=tty into a pipe: exit %d, escape codes: %v\n%q", code, strings.Contains(out, "\x1b["), out)
	}
	if !regexp.MustCompile(`(?m)^#\d+ \[stage-0 1/5\] FROM`).MatchString(out) {
		t.Errorf("--progress=tty into a pipe is not plain progress:\n%s", out)
	}
}

package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// split runs builder and returns its stdout, stderr and exit code apart.
func split(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// TestCLIGlobalHelpAndVersion: -h, --help and help print the command list
// once on stdout and exit 0; --version is the version command; a bare
// builder is a usage error.
func TestCLIGlobalHelpAndVersion(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		stdout   string // a prefix of stdout
		inStderr string
	}{
		{[]string{"--help"}, 0, "Usage: builder", ""},
		{[]string{"-h"}, 0, "Usage: builder", ""},
		{[]string{"help"}, 0, "Usage: builder", ""},
		{[]string{"--root", "/nonexistent", "--help"}, 0, "Usage: builder", ""},
		{[]string{"--version"}, 0, "builder ", ""},
		{[]string{"version"}, 0, "builder ", ""},
		{[]string{}, 2, "", "ERROR: no command given"},
		{[]string{"--no-such-flag"}, 2, "", "ERROR: unknown flag: --no-such-flag"},
	} {
		out, errOut, code := split(t, tc.args...)
		if code != tc.code || !strings.HasPrefix(out, tc.stdout) || !strings.Contains(errOut, tc.inStderr) {
			t.Errorf("builder %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.code, out, errOut)
		}
		if strings.Count(out+errOut, "Usage:") > 1 || strings.Contains(errOut, "pflag") {
			t.Errorf("builder %q printed its usage twice or a pflag error:\n%s%s", tc.args, out, errOut)
		}
	}
	out, _, code := split(t, "help", "tag")
	_, errOut, _ := split(t, "help", "tag")
	if code != 0 || out != "" || !strings.HasPrefix(errOut, "Usage: builder tag") {
		t.Errorf("builder help tag: exit %d\n%s", code, errOut)
	}
}

// TestCLIHelpListsUsedGlobals: a command's help lists only the global
// flags it acts on, yet accepts them all.
func TestCLIHelpListsUsedGlobals(t *testing.T) {
	for _, tc := range []struct {
		cmd       string
		want, not []string
	}{
		{"build", []string{"--root", "--snapshotter", "--registry-config", "--gc-keep-storage"}, nil},
		{"images", []string{"--root"}, []string{"--snapshotter", "--registry-config", "--gc-keep-storage"}},
		{"push", []string{"--root", "--registry-config"}, []string{"--snapshotter", "--gc-keep-storage"}},
		{"login", []string{"--registry-config"}, []string{"--root", "--snapshotter", "--gc-keep-storage"}},
		{"logout", nil, []string{"--root", "--snapshotter", "--registry-config", "--gc-keep-storage"}},
		{"rmi", []string{"--root", "--snapshotter"}, []string{"--registry-config", "--gc-keep-storage"}},
	} {
		_, help, code := split(t, tc.cmd, "--help")
		if code != 0 {
			t.Fatalf("builder %s --help: exit %d\n%s", tc.cmd, code, help)
		}
		for _, f := range tc.want {
			if !strings.Contains(help, f+" ") {
				t.Errorf("builder %s --help does not list %s:\n%s", tc.cmd, f, help)
			}
		}
		for _, f := range tc.not {
			if strings.Contains(help, f+" ") {
				t.Errorf("builder %s --help lists %s, which it does not use:\n%s", tc.cmd, f, help)
			}
		}
	}
	// Hidden, not removed: a global flag after the command still parses.
	if out, code := cli(t, "images", "--root", t.TempDir(), "--snapshotter", "naive", "-q"); code != 0 {
		t.Errorf("images with --snapshotter after the command: exit %d\n%s", code, out)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/build/buildtest"
)

func TestCLIMultiPlatformEmulated(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.MultiArchRegistry(t)
	ctxDir := writeCase(t, "FROM "+base+"\nARG TARGETARCH\nRUN uname -m > /arch && echo $TARGETARCH > /targetarch\n", map[string]string{})
	root, out := t.TempDir(), t.TempDir()
	o, code := cli(t, "--root", root, "build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64", "-t", "multi:test",
		"-o", "type=local,dest="+out, ctxDir)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, o)
	}
	t.Log(o)
	for dir, want := range map[string]string{"linux_amd64": "x86_64\n", "linux_arm64": "aarch64\n"} {
		b, err := os.ReadFile(filepath.Join(out, dir, "arch"))
		if err != nil || string(b) != want {
			t.Errorf("%s/arch = %q, %v; want %q", dir, b, err, want)
		}
	}
	if !strings.Contains(o, "emulating linux/arm64 with qemu-aarch64") {
		t.Errorf("no emulation note:\n%s", o)
	}
}

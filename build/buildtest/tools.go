package buildtest

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// ToolsImage returns the busybox image with a second layer holding the
// host's programs tools (absolute paths, e.g. /usr/bin/ssh) at the same
// paths, with the shared libraries ldd lists for them: a base for tests
// whose RUN needs a real ssh or git client, made in milliseconds rather
// than by debootstrap. The programs run as they do on the host.
func ToolsImage(t testing.TB, tools ...string) v1.Image {
	t.Helper()
	files := map[string]bool{}
	for _, tool := range tools {
		RequireTool(t, tool)
		files[tool] = true
		out, err := exec.Command("ldd", tool).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", tool, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(l) {
				if strings.HasPrefix(f, "/") {
					files[f] = true
				}
			}
		}
	}
	var names []string
	for f := range files {
		names = append(names, f)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	seen := map[string]bool{}
	entry := func(h *tar.Header) {
		if !seen[h.Name] {
			seen[h.Name] = true
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
		}
	}
	mkdirs := func(dir string) {
		var parents []string
		for d := dir; d != "/"; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			entry(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: mtime})
		}
	}
	for _, n := range names {
		// A directory of the host that is a symlink (/lib -> usr/lib)
		// stays one, so both spellings resolve in the image; the file
		// goes below the resolved directory.
		for d := filepath.Dir(n); d != "/"; d = filepath.Dir(d) {
			if link, err := os.Readlink(d); err == nil {
				entry(&tar.Header{Typeflag: tar.TypeSymlink, Name: d[1:], Linkname: link, Mode: 0o777, ModTime: mtime})
			}
		}
		dir, err := filepath.EvalSymlinks(filepath.Dir(n))
		if err != nil {
			t.Fatal(err)
		}
		mkdirs(dir)
		dt, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		entry(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(dir, filepath.Base(n))[1:], Mode: 0o755, Size: int64(len(dt)), ModTime: mtime})
		tw.Write(dt)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(BusyboxImage(t), mutate.Addendum{Layer: LayerFromTar(t, buf.Bytes()),
		History: v1.History{CreatedBy: "buildtest tools " + strings.Join(tools, " "), Created: v1.Time{Time: mtime.UTC()}}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecurityRunMounts runs RUN --mount options that try to escape, in
// stages built in parallel: cache ids and targets full of "..", a bind
// source above a stage's root, and rw binds of a stage and of the context.
// Everything stays inside its root: the caches live in the store's cache
// root, the bind reads the stage's own file, rw writes are thrown away, and
// the context on the host is untouched.
func TestSecurityRunMounts(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/security-mounts")
	ctxFile := filepath.Join(dir, "context", "ctx.txt")
	res, _ := f.mustBuild(dir)
	img := unpack(t, res.Image)
	for name, want := range map[string]string{
		"b-done": "b\n", "c-done": "c\n",
		"from-a":       "a\n",       // ../../../../data clamps to a's /data
		"rw-saw":       "changed\n", // the RUN could write through its rw bind…
		"after-rw":     "a\n",       // …but the stage's file kept its content
		"ctx-rw-saw":   "changed\n",
		"ctx-after-rw": "context original\n",
	} {
		got, err := os.ReadFile(filepath.Join(img.rootfs, name))
		if err != nil || string(got) != want {
			t.Errorf("/%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if got, _ := os.ReadFile(ctxFile); string(got) != "context original\n" {
		t.Errorf("the context file on the host is now %q", got)
	}
	// The caches are directories of the store's cache root; nothing named
	// after the hostile ids exists anywhere near the store or in /.
	var found []string
	for _, top := range []string{filepath.Dir(f.root), "/", os.TempDir()} {
		ents, _ := os.ReadDir(top)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "escape-") {
				found = append(found, filepath.Join(top, e.Name()))
			}
		}
	}
	filepath.WalkDir(f.root, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), "escape-") {
			found = append(found, p)
		}
		return nil
	})
	if len(found) > 0 {
		t.Errorf("cache ids escaped into %q", found)
	}
	mounts, err := filepath.Glob(filepath.Join(f.root, "cachemounts", "*", "x"))
	if err != nil || len(mounts) != 2 {
		t.Errorf("want the two caches' files under the cache root, found %q (%v)", mounts, err)
	}
}

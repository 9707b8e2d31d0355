package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/build/store"
)

// TestStoreModes checks that a store root is private: a new one is made
// 0700; one created beforehand with mode 0755 is tightened to 0700 with a
// warning that the next build prints, once; and after builds that record
// cache entries, explanations and configs holding a build arg, nothing
// under the root outside the snapshots' and cache mounts' contents is
// open to group or others.
func TestStoreModes(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	const warning = "had mode 0755, open to other users; changed it to 0700"
	for _, tc := range []struct {
		name      string
		precreate bool
	}{{"fresh", false}, {"precreated-0755", true}} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "store")
			if tc.precreate {
				if err := os.Mkdir(root, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(root, 0o755); err != nil { // whatever the umask
					t.Fatal(err)
				}
			}
			f := &fixture{t: t, root: root, base: base}
			dir := copyCase(t, "builds/explain-secret")
			var logs []string
			for _, pw := range []string{"first", "second"} {
				f.b = f.open() // a new Builder per build, as the command line makes
				_, log := f.mustBuild(dir, func(o *Options) {
					o.ExplainCache = true
					o.BuildArgs["DB_PASSWORD"] = pw
				})
				logs = append(logs, log)
			}
			n := strings.Count(strings.Join(logs, ""), warning)
			if want := map[bool]int{false: 0, true: 1}[tc.precreate]; n != want {
				t.Errorf("the warning %q was printed %d times, want %d:\n%s", warning, n, want, strings.Join(logs, "\n"))
			}
			if tc.precreate && !strings.Contains(logs[0], warning) {
				t.Errorf("the first build did not warn:\n%s", logs[0])
			}
			fi, err := os.Stat(root)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("store root has mode %#o, want 0700", fi.Mode().Perm())
			}
			checked := map[string]int{}
			err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(root, p)
				top, _, _ := strings.Cut(rel, string(filepath.Separator))
				if (top == "snapshots" || top == store.CacheMountsDir) && rel != top {
					return filepath.SkipDir // image and cache mount contents keep their modes
				}
				if fi.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s has mode %#o, open to group or others", rel, fi.Mode().Perm())
				}
				checked[top]++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, top := range []string{"blobs", "cache", "index.json"} {
				if checked[top] == 0 {
					t.Errorf("nothing checked under %s: %v", top, checked)
				}
			}
		})
	}
}

package build

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHeredocs(t *testing.T) {
	f := newFixture(t)
	res, _ := f.mustBuild(copyCase(t, "builds/heredoc"))
	u := unpack(t, res.Image)
	for _, tc := range []struct {
		path, want string
		mode       os.FileMode // 0: not checked
	}{
		{"plain", "plain hello\nsecond-line\n", 0},
		{"script", "script /dev/pipes/SCRIPT\n", 0},
		{"stdin", "from stdin world\n", 0},
		{"two-a", "aaa\n", 0},
		{"two-b", "bbb\n", 0},
		{"tabbed", "tabbed\n", 0},
		{"copied", "hello world \"quoted\" 'single'\n", 0o644},
		{"literal", "hello ${NAME}\n", 0o644},
		{"chomped", "tab stripped\n", 0o644},
		{"withmode", "x\n", 0o755},
		{"multi/A", "first\n", 0o644},
		{"multi/B", "second\n", 0o644},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := readFile(t, u.rootfs, tc.path); got != tc.want {
				t.Errorf("/%s = %q, want %q", tc.path, got, tc.want)
			}
			if tc.mode != 0 {
				st, err := os.Stat(filepath.Join(u.rootfs, tc.path))
				if err != nil || st.Mode().Perm() != tc.mode {
					t.Errorf("/%s: mode %v (%v), want %v", tc.path, st.Mode().Perm(), err, tc.mode)
				}
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(u.rootfs, "dev")); err == nil {
		t.Errorf("/dev (with the heredoc script) was committed")
	}
	// Unchanged heredocs hit the cache; a changed body runs again.
	f.b = f.open()
	again, _ := f.mustBuild(copyCase(t, "builds/heredoc"))
	if again.ManifestDigest != res.ManifestDigest || again.Cached != again.Steps {
		t.Errorf("rebuild: %d of %d cached, digest %s vs %s", again.Cached, again.Steps, again.ManifestDigest, res.ManifestDigest)
	}
	dir := copyCase(t, "builds/heredoc")
	df := filepath.Join(dir, "Dockerfile")
	dt, _ := os.ReadFile(df)
	os.WriteFile(df, append(dt, []byte("COPY <<EOF /late\nlate\nEOF\n")...), 0o644)
	res, _ = f.mustBuild(dir, func(o *Options) { o.BuildArgs["NAME"] = "there" })
	u = unpack(t, res.Image)
	if got := readFile(t, u.rootfs, "copied"); got != "hello there \"quoted\" 'single'\n" {
		t.Errorf("/copied with NAME=there: %q", got)
	}
	if got := readFile(t, u.rootfs, "late"); got != "late\n" {
		t.Errorf("/late = %q", got)
	}
}

package build

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"builder/internal/gitserver"
)

// TestAddGit builds ADD of a repository from a loopback git server by
// branch, tag and commit, with a subdirectory, --keep-git-dir, --checksum,
// --chown and --chmod, checks the files with umoci, and rebuilds to see
// that the commit, not the time of the clone, keys the step.
func TestAddGit(t *testing.T) {
	f := newFixture(t)
	srv := gitserver.Start(t)
	repo := srv.Repo(t, "app")
	first := repo.Commit("one", map[string]string{"src/main.txt": "v1\n", "README": "readme\n", "link": "->/etc/passwd"})
	repo.Git("tag", "v1")
	repo.Commit("two", map[string]string{"src/main.txt": "v2\n"})
	repo.Push()
	url := srv.HTTPURL + "/app.git"
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "context"), 0o755)
	df := "ARG BASE\nFROM $BASE\n" +
		"ADD " + url + "#v1 /tag\n" +
		"ADD " + srv.GitURL + "/app.git#main:src /sub\n" +
		"ADD --keep-git-dir=true --checksum=" + first + " " + url + "#" + first + " /kept\n" +
		"ADD --chown=1001:1002 --chmod=0700 " + url + " /owned/\n"
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644)
	res, log := f.mustBuild(dir)
	u := unpack(t, res.Image)
	for p, want := range map[string]string{"tag/src/main.txt": "v1\n", "sub/main.txt": "v2\n", "kept/README": "readme\n", "owned/src/main.txt": "v2\n"} {
		if got := readFile(t, u.rootfs, p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(u.rootfs, "tag/link")); err != nil || l != "/etc/passwd" {
		t.Errorf("tag/link = %q, %v; want the symlink itself", l, err)
	}
	if _, err := os.Stat(filepath.Join(u.rootfs, "tag/.git")); err == nil {
		t.Error("/tag has .git without --keep-git-dir")
	}
	if _, err := os.Stat(filepath.Join(u.rootfs, "kept/.git/HEAD")); err != nil {
		t.Errorf("/kept has no .git: %v", err)
	}
	st, err := os.Lstat(filepath.Join(u.rootfs, "owned/src/main.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 1001 || sys.Gid != 1002 || st.Mode().Perm() != 0o700 {
		t.Errorf("owned/src/main.txt: %d:%d %v, want 1001:1002 0700", sys.Uid, sys.Gid, st.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Join(u.rootfs, "sub/main.txt")); !fi.ModTime().Equal(time.Date(2021, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("mtime %v, want the commit's", fi.ModTime())
	}
	// A rebuild resolves the refs (ls-remote) but fetches nothing and hits
	// the cache on every step.
	fetches := srv.HTTPFetches()
	res2, log2 := f.mustBuild(dir)
	if n := srv.HTTPFetches() - fetches; n != 0 || fetches == 0 {
		t.Errorf("a cached rebuild fetched %d times (the first build %d)", n, fetches)
	}
	if res2.Cached != res2.Steps {
		t.Errorf("rebuild: %d of %d steps cached\n%s\nfirst build:\n%s", res2.Cached, res2.Steps, log2, log)
	}
	if res2.ManifestDigest != res.ManifestDigest {
		t.Errorf("rebuild gave another image")
	}
	// A new commit on main misses the steps that follow main.
	repo.Commit("three", map[string]string{"src/main.txt": "v3\n"})
	repo.Push()
	res3, _ := f.mustBuild(dir)
	if got := readFile(t, unpack(t, res3.Image).rootfs, "sub/main.txt"); got != "v3\n" {
		t.Errorf("after a new commit: %q", got)
	}
}

func TestAddGitErrors(t *testing.T) {
	f := newFixture(t)
	srv := gitserver.Start(t)
	repo := srv.Repo(t, "app")
	commit := repo.Commit("one", map[string]string{"a": "a\n"})
	repo.Push()
	url := srv.GitURL + "/app.git"
	other := strings.Repeat("1", 40)
	for _, tc := range []struct {
		name, line, want string
	}{
		{"checksum mismatch", "ADD --checksum=" + other + " " + url + " /src", `^Dockerfile:3: ADD .*checksum mismatch: .*` + commit + `.*` + other},
		{"checksum not a commit", "ADD --checksum=sha256:" + strings.Repeat("0", 64) + " " + url + " /src", `not a commit sha`},
		{"option injection", "ADD " + url + "#--upload-pack=touch${IFS}/tmp/x /src", `starts with '-'`},
		{"missing ref", "ADD " + url + "#nope /src", `no ref "nope"`},
		{"two sources", "ADD " + url + " f.txt /src/", `one source`},
		{"no server", "ADD git://127.0.0.1:1/x.git /src", `git source git://127.0.0.1:1/x.git`},
	} {
		t.Run(tc.name, func(t *testing.T) { f.failLine(t, tc.line, tc.want) })
	}
	if ents, _ := os.ReadDir(filepath.Join(f.root, "tmp")); len(ents) > 0 {
		t.Errorf("left in tmp: %v", ents)
	}
}

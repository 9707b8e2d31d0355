package copier

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"builder/internal/testenv"
)

// statTree is a small context with nested files, a hard link and a
// symlink; files are written with the same content length so that a
// change can keep the size.
func statTree(t *testing.T) string {
	t.Helper()
	dir := newTree(t, map[string]string{
		"a.txt":         "aaaa",
		"sub/b.txt":     "bbbb",
		"sub/deep/c.go": "cccc",
		".dockerignore": "*.log\n",
		"skip.log":      "llll",
	})
	must(t, os.Link(filepath.Join(dir, "a.txt"), filepath.Join(dir, "sub", "a-link")))
	must(t, os.Symlink("a.txt", filepath.Join(dir, "sym")))
	return dir
}

// openTestCache opens the stat cache of tree in cdir with a clock an hour
// ahead, so that the freshly written files count as settled.
func openTestCache(t *testing.T, cdir, tree string) *StatCache {
	t.Helper()
	c, err := OpenStatCache(cdir, tree)
	must(t, err)
	c.now = func() time.Time { return time.Now().Add(time.Hour) }
	return c
}

func contextChecksum(t *testing.T, tree string, c *StatCache) string {
	t.Helper()
	ctxDir, err := LoadContext(tree, "")
	must(t, err)
	ctxDir.Hashes = c
	sum, err := Checksum(context.Background(), ctxDir.Source(), Request{Sources: []string{"."}, Dest: "/app/"})
	must(t, err)
	return sum
}

// TestStatCache checks that a saved stat cache spares every read of an
// unchanged tree with the same checksum as a cold one, and that a file
// changed behind it (same size, same mtime to the nanosecond) is read
// again and changes the checksum.
func TestStatCache(t *testing.T) {
	tree, cdir := statTree(t), t.TempDir()
	cold := contextChecksum(t, tree, nil)

	c := openTestCache(t, cdir, tree)
	if got := contextChecksum(t, tree, c); got != cold {
		t.Fatalf("checksum with an empty cache %s, without %s", got, cold)
	}
	// a.txt (its link is a peer), sub/b.txt, sub/deep/c.go, .dockerignore.
	if hits, reads := c.Stats(); hits != 0 || reads != 4 || c.Len() != 4 {
		t.Fatalf("first checksum: %d hits, %d reads, %d entries; want 0, 4, 4", hits, reads, c.Len())
	}
	must(t, c.Save())

	c = openTestCache(t, cdir, tree)
	if got := contextChecksum(t, tree, c); got != cold {
		t.Fatalf("cached checksum %s, cold %s", got, cold)
	}
	if hits, reads := c.Stats(); hits != 4 || reads != 0 {
		t.Fatalf("unchanged tree: %d hits, %d reads; want 4, 0", hits, reads)
	}

	// Change b.txt in place: same size, mtime set back exactly.
	p := filepath.Join(tree, "sub", "b.txt")
	var before, after unix.Stat_t
	must(t, unix.Lstat(p, &before))
	must(t, os.WriteFile(p, []byte("BBBB"), 0o644))
	must(t, unix.UtimesNano(p, []unix.Timespec{before.Atim, before.Mtim}))
	must(t, unix.Lstat(p, &after))
	if after.Size != before.Size || after.Mtim != before.Mtim || after.Ino != before.Ino {
		t.Fatalf("setup: size/mtime/inode changed: %+v → %+v", before, after)
	}
	if after.Ctim == before.Ctim {
		t.Fatal("setup: ctime did not change on write; the file system's timestamps are too coarse for this test")
	}
	want := contextChecksum(t, tree, nil)
	if want == cold {
		t.Fatal("setup: the change does not change the cold checksum")
	}
	if got := contextChecksum(t, tree, c); got != want {
		t.Errorf("after an in-place change the cached checksum is %s, want %s (cold was %s)", got, want, cold)
	}
	if hits, reads := c.Stats(); hits != 4+3 || reads != 1 {
		t.Errorf("after the change: %d hits, %d reads; want 7, 1", hits, reads)
	}
}

// TestStatCacheInvalidation changes one file's metadata in ways that keep
// its content and checks that the cached checksum always follows the
// uncached one.
func TestStatCacheInvalidation(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, p string)
	}{
		{"chmod", func(t *testing.T, p string) { must(t, os.Chmod(p, 0o600)) }},
		{"xattr", func(t *testing.T, p string) {
			if err := unix.Setxattr(p, "user.test", []byte("v1"), 0); err != nil {
				testenv.Skip(t, "no user xattrs here: %v", err)
			}
		}},
		{"replaced by a copy", func(t *testing.T, p string) {
			dt, err := os.ReadFile(p)
			must(t, err)
			var st unix.Stat_t
			must(t, unix.Lstat(p, &st))
			tmp := p + ".new"
			must(t, os.WriteFile(tmp, append([]byte("X"), dt[1:]...), 0o644))
			must(t, unix.UtimesNano(tmp, []unix.Timespec{st.Atim, st.Mtim}))
			must(t, os.Rename(tmp, p))
		}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			tree, cdir := statTree(t), t.TempDir()
			sc := openTestCache(t, cdir, tree)
			contextChecksum(t, tree, sc)
			must(t, sc.Save())
			c.change(t, filepath.Join(tree, "sub", "deep", "c.go"))
			want := contextChecksum(t, tree, nil)
			sc = openTestCache(t, cdir, tree)
			if got := contextChecksum(t, tree, sc); got != want {
				t.Errorf("cached checksum %s, uncached %s", got, want)
			}
			if _, reads := sc.Stats(); reads != 1 {
				t.Errorf("%d files read, want 1", reads)
			}
		})
	}
}

// TestStatCacheRacy checks that a file read right after it changed is not
// remembered, as a change within the same clock tick would not show.
func TestStatCacheRacy(t *testing.T) {
	tree, cdir := statTree(t), t.TempDir()
	c, err := OpenStatCache(cdir, tree)
	must(t, err)
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(tree, "a.txt"), &st))
	c.now = func() time.Time { return time.Unix(0, st.Ctim.Nano()).Add(10 * time.Millisecond) }
	contextChecksum(t, tree, c)
	if c.Len() != 0 {
		t.Errorf("%d entries remembered for files changed 10ms before they were read", c.Len())
	}
}

// TestStatCacheDamaged checks that a cache file that does not verify is
// ignored rather than trusted.
func TestStatCacheDamaged(t *testing.T) {
	tree, cdir := statTree(t), t.TempDir()
	c := openTestCache(t, cdir, tree)
	sum := contextChecksum(t, tree, c)
	must(t, c.Save())
	dt, err := os.ReadFile(c.file)
	must(t, err)
	for _, damage := range [][]byte{dt[:len(dt)/2], append(append([]byte{}, dt[:40]...), 'x'), []byte("garbage")} {
		must(t, os.WriteFile(c.file, damage, 0o600))
		c2 := openTestCache(t, cdir, tree)
		if c2.Len() != 0 {
			t.Errorf("damaged cache file (%d bytes) loaded %d entries", len(damage), c2.Len())
		}
		if got := contextChecksum(t, tree, c2); got != sum {
			t.Errorf("checksum with a damaged cache %s, want %s", got, sum)
		}
	}
	// Another tree's cache is not used.
	other := openTestCache(t, cdir, t.TempDir())
	ctxDir, err := LoadContext(tree, "")
	must(t, err)
	src := ctxDir.Source()
	src.Hashes = other
	if _, err := Checksum(context.Background(), src, Request{Sources: []string{"."}, Dest: "/"}); err != nil {
		t.Fatal(err)
	}
	if hits, reads := other.Stats(); hits+reads != 0 || other.Len() != 0 {
		t.Errorf("a cache of another tree was used: %d hits, %d reads", hits, reads)
	}
}

// TestStatCacheSum checks that Sum gives the content digest the checksum
// read while the file is unchanged, and nothing once it changed (same
// size, same mtime) or for a path never read.
func TestStatCacheSum(t *testing.T) {
	tree := statTree(t)
	c := openTestCache(t, t.TempDir(), tree)
	contextChecksum(t, tree, c)
	p := filepath.Join(tree, "sub", "b.txt")
	fi, err := os.Lstat(p)
	must(t, err)
	sum, ok := c.Sum("sub/b.txt", fi)
	if want := sha256.Sum256([]byte("bbbb")); !ok || sum != want {
		t.Fatalf("Sum = %x, %v; want %x", sum, ok, want)
	}
	if _, ok := c.Sum("sub/deep", fi); ok {
		t.Error("Sum of a path never read")
	}
	must(t, os.WriteFile(p, []byte("BBBB"), 0o644))
	must(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))
	fi, err = os.Lstat(p)
	must(t, err)
	if _, ok := c.Sum("sub/b.txt", fi); ok {
		t.Error("Sum of a changed file")
	}
	if _, ok := (*StatCache)(nil).Sum("a.txt", fi); ok {
		t.Error("Sum of a nil cache")
	}
}

package copier

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostileRoot makes <tmp>/root with symlinks that point out of it and
// <tmp>/outside, a directory that must stay empty, next to it.
func hostileRoot(t *testing.T) (root, outside string) {
	t.Helper()
	tmp := t.TempDir()
	root, outside = filepath.Join(tmp, "root"), filepath.Join(tmp, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "dir"), filepath.Join(root, "tmp")} {
		must(t, os.Mkdir(d, 0o755))
	}
	for name, target := range map[string]string{
		"abs":      "/",
		"host":     outside,
		"climb":    "../../../../../..",
		"chain":    "climb/tmp",
		"dangling": "/nowhere/deeper",
	} {
		must(t, os.Symlink(target, filepath.Join(root, name)))
	}
	must(t, os.WriteFile(filepath.Join(root, "file"), []byte("x"), 0o644))
	return root, outside
}

// assertEmpty fails t if dir holds anything.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Fatalf("written outside the root: %s holds %v", dir, ents)
	}
}

// TestMkdirAllHostile creates WORKDIRs through symlinks that point out of
// the root: they resolve inside it, and nothing appears outside.
func TestMkdirAllHostile(t *testing.T) {
	needRoot(t)
	tests := []struct {
		dir     string
		want    string // created below root, "" for an error
		wantErr string
	}{
		{dir: "/abs/tmp/w", want: "tmp/w"},
		{dir: "/host/w", want: strings.TrimPrefix(filepath.Join("HOST", "w"), "/")},
		{dir: "/climb/w", want: "w"},
		{dir: "/chain/w", want: "tmp/w"},
		{dir: "/dangling/w", want: "nowhere/deeper/w"},
		{dir: "/dir/../../../w", want: "w"},
		{dir: "/file/w", wantErr: "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			root, outside := hostileRoot(t)
			err := MkdirAll(root, tc.dir, &Owner{UID: 1234, GID: 5678})
			assertEmpty(t, outside)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("MkdirAll(%s) = %v, want an error with %q", tc.dir, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("MkdirAll(%s): %v", tc.dir, err)
			}
			want := strings.Replace(tc.want, "HOST", strings.TrimPrefix(outside, "/"), 1)
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, want), &st); err != nil {
				t.Fatalf("%s not created in the root: %v", want, err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o7777 != 0o755 || st.Uid != 1234 || st.Gid != 5678 {
				t.Errorf("%s: mode %o owner %d:%d, want a 0755 directory of 1234:5678", want, st.Mode, st.Uid, st.Gid)
			}
			if err := unix.Lstat(filepath.Join(root, "tmp"), &st); err != nil || st.Uid != 0 {
				t.Errorf("existing /tmp changed owner: %d %v", st.Uid, err)
			}
		})
	}
}

// TestMkdirAllFlipRace creates WORKDIRs below a directory of the root that
// another goroutine keeps exchanging (renameat2 RENAME_EXCHANGE) with a
// symlink to a directory outside the root, as a parallel RUN sharing the
// tree could. Resolving the path and then creating it by its string (the
// old WORKDIR code) follows the symlink now and then; through directory
// handles each attempt either lands inside the root or fails, and nothing
// appears outside. (COPY and ADD have the same race in
// build.TestSymlinkFlipRace.)
func TestMkdirAllFlipRace(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name string
		do   func(root string, i int) error
	}{
		{"workdir", func(root string, i int) error {
			return MkdirAll(root, fmt.Sprintf("/a/%d/c", i), nil)
		}},
		{"workdir-owned", func(root string, i int) error {
			return MkdirAll(root, fmt.Sprintf("/a/%d/c", i), &Owner{UID: 1, GID: 1})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, outside := hostileRoot(t)
			a, x := filepath.Join(root, "a"), filepath.Join(root, "x")
			must(t, os.Mkdir(a, 0o755))
			must(t, os.Symlink(outside, x))
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					_ = unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, x, unix.RENAME_EXCHANGE)
				}
			}()
			inside, failed := 0, 0
			deadline := time.Now().Add(2 * time.Second)
			for i := 0; i < 600 && time.Now().Before(deadline); i++ {
				if err := tc.do(root, i); err != nil {
					failed++
				} else {
					inside++
				}
			}
			close(stop)
			wg.Wait()
			t.Logf("%d attempts succeeded inside the root, %d failed", inside, failed)
			assertEmpty(t, outside)
		})
	}
}

package cachemount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"builder/internal/testenv"
)

func TestAcquireSharing(t *testing.T) {
	testenv.RequireRoot(t)
	base := filepath.Join(t.TempDir(), "cachemounts")
	d := New(base)
	ctx := context.Background()
	mount := func(sharing string) Mount {
		return Mount{ID: "../../escape", Sharing: sharing}
	}
	for _, tc := range []struct {
		name         string
		first, other string
		sameDir      bool // the second mount gets the first one's directory
		waits        bool // the second mount waits for the first's release
	}{
		{"shared+shared", "shared", "shared", true, false},
		{"locked+locked", "locked", "locked", true, true},
		{"shared+locked", "", "locked", true, true},
		{"private+private", "private", "private", false, false},
		{"locked+private", "locked", "private", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir1, release1, err := d.Acquire(ctx, mount(tc.first), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(dir1, base+"/") {
				t.Fatalf("cache dir %s escapes the cache root", dir1)
			}
			got := make(chan string, 1)
			go func() {
				dir2, release2, err := d.Acquire(ctx, mount(tc.other), nil)
				if err != nil {
					t.Error(err)
					got <- ""
					return
				}
				release2()
				got <- dir2
			}()
			var dir2 string
			select {
			case dir2 = <-got:
				if tc.waits {
					t.Errorf("second mount did not wait for the first")
				}
				release1()
			case <-time.After(300 * time.Millisecond):
				if !tc.waits {
					t.Fatalf("second mount is blocked")
				}
				release1()
				dir2 = <-got
			}
			if (dir1 == dir2) != tc.sameDir {
				t.Errorf("dirs %s and %s, want same=%v", dir1, dir2, tc.sameDir)
			}
		})
	}
}

func TestAcquireCreates(t *testing.T) {
	testenv.RequireRoot(t)
	d := New(filepath.Join(t.TempDir(), "cachemounts"))
	ctx := context.Background()
	mode, uid, gid := uint64(0o1770), uint64(1234), uint64(5678)
	seeded := func(dir string) error { return os.WriteFile(filepath.Join(dir, "seed"), []byte("s"), 0o644) }
	dir, release, err := d.Acquire(ctx, Mount{ID: "c", Source: "a/b", Mode: &mode, UID: &uid, GID: &gid}, seeded)
	if err != nil {
		t.Fatal(err)
	}
	release()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := os.ModeDir | os.ModeSticky | 0o770; fi.Mode() != want {
		t.Errorf("mode %v, want %v", fi.Mode(), want)
	}
	for _, p := range []string{"seed", "a/b"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
	// A second use neither seeds again nor fails on the existing source.
	again, release, err := d.Acquire(ctx, Mount{ID: "c", Source: "a/b"}, func(string) error { return errors.New("seeded twice") })
	if err != nil || again != dir {
		t.Fatalf("second Acquire = %s, %v; want %s", again, err, dir)
	}
	release()
	// A failed seed leaves nothing behind.
	if _, _, err := d.Acquire(ctx, Mount{ID: "bad"}, func(string) error { return errors.New("boom") }); err == nil {
		t.Fatal("Acquire with a failing seed succeeded")
	}
	bad, _ := d.Paths("bad")
	if _, err := os.Lstat(bad); !os.IsNotExist(err) {
		t.Errorf("failed seed left %s: %v", bad, err)
	}
}

func TestRestore(t *testing.T) {
	testenv.RequireRoot(t)
	d := New(filepath.Join(t.TempDir(), "cachemounts"))
	ctx := context.Background()
	fill := func(dir string) error { return os.WriteFile(filepath.Join(dir, "restored"), nil, 0o644) }
	if _, err := d.Restore(ctx, Mount{ID: "r"}, func(string) error { return errors.New("boom") }); err == nil {
		t.Fatal("Restore with a failing fill succeeded")
	}
	dir, _ := d.Paths("r")
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("failed restore left %s: %v", dir, err)
	}
	if ok, err := d.Restore(ctx, Mount{ID: "r"}, fill); err != nil || !ok {
		t.Fatalf("Restore = %v, %v; want true, nil", ok, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "restored")); err != nil {
		t.Fatal(err)
	}
	// A cache with content of its own is not restored over.
	if ok, err := d.Restore(ctx, Mount{ID: "r"}, fill); err != nil || ok {
		t.Fatalf("second Restore = %v, %v; want false, nil", ok, err)
	}
}

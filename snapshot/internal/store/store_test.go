package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func noBuild(string, string) error { return nil }

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestConcurrentCommitOfOneName(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", i)
			dir, _, err := s.Prepare(ctx, key, "", noBuild)
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, "fs", "who"), []byte(key), 0o644)
			}
			if err == nil {
				err = s.Commit("same", key, func(string) error { return nil })
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if !s.Exists("same") {
		t.Fatal("name missing after commits")
	}
	if got := entries(t, filepath.Join(s.Root(), "active")); len(got) != 0 {
		t.Errorf("active leftovers: %v", got)
	}
	if got := entries(t, s.TmpDir()); len(got) != 0 {
		t.Errorf("tmp leftovers: %v", got)
	}
}

func TestPrepareOneKeyRace(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, exists := 0, 0
	for range 8 {
		wg.Go(func() {
			_, _, err := s.Prepare(context.Background(), "k", "", noBuild)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrExists):
				exists++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok != 1 || exists != 7 {
		t.Errorf("%d prepared, %d refused; want 1 and 7", ok, exists)
	}
}

func TestFailedBuildLeavesNothing(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, _, err := s.Prepare(context.Background(), "k", "", func(string, string) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if got := entries(t, filepath.Join(s.Root(), "active")); len(got) != 0 {
		t.Errorf("active leftovers: %v", got)
	}
	if _, _, err := s.Prepare(context.Background(), "k", "", noBuild); err != nil {
		t.Errorf("key unusable after a failed build: %v", err)
	}
}

func TestOpenCleansLeftovers(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(p string) string {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mk("tmp/trash-1/d/deep")
	old := mk("tmp/probe-old")
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	mk("tmp/probe-new")
	mk("tmp/builder-mnt-x") // not ours to judge
	mk("active/0123456789abcdef/fs")
	if err := os.WriteFile(filepath.Join(root, "active/fedcba9876543210.lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A live key of this process survives a second Open.
	if _, _, err := s.Prepare(context.Background(), "live", "", noBuild); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Base(s.ActiveDir("live")), filepath.Base(s.ActiveDir("live")) + ".lock"}
	if got := entries(t, filepath.Join(root, "active")); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("active after cleanup: %v, want %v", got, want)
	}
	if got := entries(t, filepath.Join(root, "tmp")); fmt.Sprint(got) != "[builder-mnt-x probe-new]" {
		t.Errorf("tmp after cleanup: %v", got)
	}
}

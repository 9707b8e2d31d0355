package naive

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"builder/snapshot/internal/store"
	"builder/snapshot/internal/treetest"
)

// TestDiffFlipRace: see treetest.DiffFlipRace.
func TestDiffFlipRace(t *testing.T) {
	s := newRaceSnapshotter(t)
	ctx := context.Background()
	if _, err := s.Prepare(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	dir, _, err := s.st.Active("k")
	if err != nil {
		t.Fatal(err)
	}
	treetest.DiffFlipRace(t, filepath.Join(dir, "fs"), func(w io.Writer) error {
		return s.Diff(ctx, w, "k", store.DiffOptions{})
	})
}

func newRaceSnapshotter(t *testing.T) *Snapshotter {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

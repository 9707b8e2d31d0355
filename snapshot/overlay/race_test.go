package overlay

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"builder/snapshot/internal/store"
	"builder/snapshot/internal/treetest"
)

// TestDiffFlipRace: see treetest.DiffFlipRace.
func TestDiffFlipRace(t *testing.T) {
	s := newSnapshotter(t)
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

package snapshot_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"builder/internal/testenv"
	"builder/snapshot"
)

// BenchmarkDiffTinyChange diffs a one-file change on top of trees of
// growing size: overlay's cost must stay flat, naive's grows with the tree.
func BenchmarkDiffTinyChange(b *testing.B) {
	testenv.RequireRoot(b)
	ctx := context.Background()
	for _, kind := range []string{snapshot.Overlay, snapshot.Naive} {
		for _, files := range []int{100, 10000} {
			b.Run(fmt.Sprintf("%s/files=%d", kind, files), func(b *testing.B) {
				sn, _, err := snapshot.Open(b.TempDir(), kind)
				if err != nil {
					testenv.Skip(b, "open %s snapshotter: %v", kind, err)
				}
				mounts, err := sn.Prepare(ctx, "base-key", "")
				if err != nil {
					b.Fatal(err)
				}
				err = snapshot.WithMounts(ctx, [][]snapshot.Mount{mounts}, func(r []string) error {
					for i := range files {
						d := filepath.Join(r[0], fmt.Sprintf("d%03d", i/100))
						if err := os.MkdirAll(d, 0o755); err != nil {
							return err
						}
						if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), []byte("content"), 0o644); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				if err := sn.Commit(ctx, "base", "base-key"); err != nil {
					b.Fatal(err)
				}
				mounts, err = sn.Prepare(ctx, "k", "base")
				if err != nil {
					b.Fatal(err)
				}
				err = snapshot.WithMounts(ctx, [][]snapshot.Mount{mounts}, func(r []string) error {
					return os.WriteFile(filepath.Join(r[0], "d000", "new"), []byte("tiny"), 0o644)
				})
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for b.Loop() {
					if err := sn.Diff(ctx, io.Discard, "k", snapshot.DiffOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

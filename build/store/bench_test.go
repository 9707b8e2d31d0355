package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/store"
)

// BenchmarkAutoGCUnchanged measures automatic GC after a build that added
// no blob (a fully cached one) on a store of 5,000 blobs: "sum kept" is
// the pass that trusts the last sum, "walk" the pass that stats every
// blob, as every build did before.
func BenchmarkAutoGCUnchanged(b *testing.B) {
	for _, c := range []struct {
		name   string
		settle time.Duration
	}{{"sum_kept", 0}, {"walk", 100 * 365 * 24 * time.Hour}} {
		b.Run(c.name, func(b *testing.B) {
			defer store.SetSettle(c.settle)()
			f := newFixture(b)
			dir := filepath.Dir(f.blobs.Path(v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064d", 0)}))
			for i := 0; i < 5000; i++ {
				dt := []byte(fmt.Sprintf("blob %d", i))
				sum := sha256.Sum256(dt)
				if err := os.WriteFile(filepath.Join(dir, hex.EncodeToString(sum[:])), dt, 0o600); err != nil {
					b.Fatal(err)
				}
			}
			st := f.open(1<<40, -1)
			ctx := context.Background()
			if _, err := st.AutoGC(ctx); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := st.AutoGC(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// flipBit inverts one bit in the middle of stored blob d, in place, as a
// bad disk would.
func flipBit(t *testing.T, s *content.Store, d v1.Hash) {
	t.Helper()
	b, err := os.ReadFile(s.Path(d))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(s.Path(d), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOutputsRefuseCorruptBlob flips a bit of a layer blob and writes the
// image in every format: each fails with a *content.CorruptError naming
// the blob, the directory outputs write nothing, and the corrupt blob is
// gone from the store, so the next build fetches or rebuilds it.
func TestOutputsRefuseCorruptBlob(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		write func(ctx context.Context, img v1.Image, dir string) error
	}{
		{"oci archive", func(ctx context.Context, img v1.Image, _ string) error {
			return WriteOCIArchive(ctx, io.Discard, img, "app:1")
		}},
		{"docker archive", func(ctx context.Context, img v1.Image, _ string) error {
			return WriteDockerArchive(ctx, io.Discard, img, []string{"app:1"})
		}},
		{"oci dir", func(ctx context.Context, img v1.Image, dir string) error {
			return WriteOCIDir(ctx, filepath.Join(dir, "out"), img, "app:1", nil)
		}},
		{"local", func(ctx context.Context, img v1.Image, dir string) error {
			return UnpackRootfs(ctx, filepath.Join(dir, "out"), img)
		}},
		{"rootfs tar", func(ctx context.Context, img v1.Image, dir string) error {
			return WriteRootfsTar(ctx, io.Discard, img, dir)
		}},
	}
	for _, tt := range tests {
		// Layer 1 is uncompressed: no gzip checksum catches the flipped
		// bit. Layer 2 is gzip: decompression may fail before the end.
		for _, which := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d", tt.name, which), func(t *testing.T) {
				s := openStore(t)
				img, _ := loadFixture(t, s, content.Gzip, content.Uncompressed, content.Gzip)
				layers, _ := img.Layers()
				bad, _ := layers[which].Digest()
				flipBit(t, s, bad)
				dir := t.TempDir()
				err := tt.write(context.Background(), img, dir)
				var ce *content.CorruptError
				if !errors.As(err, &ce) || ce.Digest != bad {
					t.Fatalf("err = %v, want a CorruptError for %s", err, bad)
				}
				if msg := err.Error(); !strings.Contains(msg, "builder check") || strings.Contains(msg, "\n") {
					t.Errorf("message %q: want one line pointing at builder check", msg)
				}
				if left, _ := os.ReadDir(dir); len(left) != 0 {
					t.Errorf("output left behind: %v", left)
				}
				if s.Has(bad) {
					t.Error("the corrupt blob is still in the store")
				}
			})
		}
	}
}

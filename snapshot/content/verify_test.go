package content

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// TestOpenVerified reads blobs that were damaged in place in the ways a
// disk or a restore damages them: each damaged one fails with a
// *CorruptError naming it, on the read of its last bytes, and is removed.
func TestOpenVerified(t *testing.T) {
	// A small blob is hashed in line, a large one in a goroutine.
	for _, reps := range []int{3000, 60000} {
		t.Run(fmt.Sprint(reps*37), func(t *testing.T) {
			testOpenVerified(t, bytes.Repeat([]byte("builder verifies every blob it ships\n"), reps))
		})
	}
}

func testOpenVerified(t *testing.T, data []byte) {
	tests := []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"intact", nil},
		{"flipped bit", func(b []byte) []byte { b[len(b)/2] ^= 1; return b }},
		{"last byte", func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"grown", func(b []byte) []byte { return append(b, 0) }},
		{"empty", func([]byte) []byte { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			d, _, err := s.WriteBlob(context.Background(), bytes.NewReader(data), mustHash("sha256:"+sha256Hex(data)))
			if err != nil {
				t.Fatal(err)
			}
			size := int64(len(data))
			if tt.damage != nil {
				damaged := tt.damage(append([]byte(nil), data...))
				if err := os.WriteFile(s.Path(d), damaged, 0o600); err != nil {
					t.Fatal(err)
				}
				size = int64(len(damaged))
			}
			// Read what the descriptor or the file says, no more, as a tar
			// writer does: the
			// verdict must come without an io.EOF.
			rc, err := s.OpenVerified(d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.LimitReader(rc, max(size, int64(len(data)))))
			rc.Close()
			if tt.damage == nil {
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("intact blob: %d bytes, %v", len(got), err)
				}
				if err := s.Verify(d); err != nil {
					t.Errorf("Verify: %v", err)
				}
				if _, err := s.ReadBlob(d, 8<<20); err != nil {
					t.Errorf("ReadBlob: %v", err)
				}
				return
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.Digest != d {
				t.Fatalf("err = %v, want a CorruptError for %s", err, d)
			}
			msg := err.Error()
			if !strings.Contains(msg, d.String()) || !strings.Contains(msg, "builder check --repair") || !ce.Removed {
				t.Errorf("message %q: want the blob, the removal and `builder check --repair`", msg)
			}
			if s.Has(d) {
				t.Error("corrupt blob left in the store")
			}
		})
	}
}

// TestVerifyLeavesReplacedBlob checks that a corrupt blob is removed only
// if it is still the file that was read: a repair that renamed the good
// blob into place meanwhile keeps it.
func TestVerifyLeavesReplacedBlob(t *testing.T) {
	s := openStore(t)
	data := []byte("good bytes")
	d, _, err := s.WriteBlob(context.Background(), bytes.NewReader(data), mustHash("sha256:"+sha256Hex(data)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(d), []byte("bad  bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := s.OpenVerified(d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// The repair: the good bytes renamed over the corrupt file.
	tmp := s.Path(d) + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.Path(d)); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Removed {
		t.Fatalf("err = %v, want a CorruptError that removed nothing", err)
	}
	if err := s.Verify(d); err != nil {
		t.Errorf("the repaired blob: %v", err)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

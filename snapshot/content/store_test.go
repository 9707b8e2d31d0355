package content

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Digests of the fixtures in testdata, computed with sha256sum.
var (
	helloDigest = mustHash("sha256:882b6c8d0241a41565d3dd51be89e570e43145d625a324dd6dc6bb0726e22587")
	layerDiffID = mustHash("sha256:fd710b43c0dbb11734ea989f69679efb2b4e48beb91bcb2d33bf20ae94184091")
)

func mustHash(s string) v1.Hash {
	h, err := v1.NewHash(s)
	if err != nil {
		panic(err)
	}
	return h
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ingestEntries lists what is left in ingest/.
func ingestEntries(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.ingestDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestOpenLayout(t *testing.T) {
	root := t.TempDir()
	for i := 0; i < 2; i++ { // the second Open finds everything in place
		s, err := Open(root)
		if err != nil {
			t.Fatalf("open #%d: %v", i, err)
		}
		if s.Root() != root {
			t.Errorf("Root() = %q, want %q", s.Root(), root)
		}
	}
	tests := []struct {
		path string
		want string // "" for a directory
	}{
		{"blobs/sha256", ""},
		{"ingest", ""},
		{"content-version", "1\n"},
		{"oci-layout", `{"imageLayoutVersion":"1.0.0"}`},
	}
	for _, tt := range tests {
		fi, err := os.Stat(filepath.Join(root, tt.path))
		if err != nil {
			t.Errorf("%s: %v", tt.path, err)
			continue
		}
		if tt.want == "" {
			if !fi.IsDir() {
				t.Errorf("%s is not a directory", tt.path)
			}
			continue
		}
		got, _ := os.ReadFile(filepath.Join(root, tt.path))
		if string(got) != tt.want {
			t.Errorf("%s = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestOpenRejectsOtherVersion(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "content-version"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("Open = %v, want ErrUnsupportedVersion", err)
	}
}

func TestOpenRemovesStaleIngest(t *testing.T) {
	s := openStore(t)
	// A file nobody locks: what a killed writer leaves behind.
	stale := filepath.Join(s.ingestDir(), "blob-stale")
	if err := os.WriteFile(stale, []byte("half a blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A live writer holds its lock; its file must survive.
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(readFixture(t, "hello.txt")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(s.Root()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale ingest file survived Open: %v", err)
	}
	if got := ingestEntries(t, s); len(got) != 1 || got[0] != filepath.Base(w.f.Name()) {
		t.Errorf("ingest = %v, want only the live writer's file", got)
	}
	if err := w.Commit(helloDigest); err != nil {
		t.Fatalf("commit after concurrent Open: %v", err)
	}
	if !s.Has(helloDigest) {
		t.Error("blob missing after commit")
	}
}

// failReader fails the test if it is read.
type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("reader was read although the blob is stored")
	return 0, io.EOF
}

func TestWriteBlob(t *testing.T) {
	hello := readFixture(t, "hello.txt")
	other := mustHash("sha256:" + strings.Repeat("ab", 32))
	tests := []struct {
		name     string
		data     []byte
		expected v1.Hash
		wantErr  error
		want     v1.Hash
	}{
		{"checked", hello, helloDigest, nil, helloDigest},
		{"unchecked", hello, v1.Hash{}, nil, helloDigest},
		{"mismatch", hello, other, ErrDigestMismatch, v1.Hash{}},
		{"invalid expected", hello, v1.Hash{Algorithm: "sha256", Hex: "../../etc"}, ErrInvalidDigest, v1.Hash{}},
		{"wrong algorithm", hello, v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("a", 128)}, ErrInvalidDigest, v1.Hash{}},
		{"empty", nil, v1.Hash{}, nil, mustHash("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			got, size, err := s.WriteBlob(context.Background(), bytes.NewReader(tt.data), tt.expected)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				var n int
				s.Walk(context.Background(), func(v1.Hash, int64) error { n++; return nil })
				if n != 0 {
					t.Errorf("%d blobs stored after a failed write", n)
				}
				if left := ingestEntries(t, s); len(left) != 0 {
					t.Errorf("ingest not cleaned: %v", left)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || size != int64(len(tt.data)) {
				t.Fatalf("got %s (%d bytes), want %s (%d bytes)", got, size, tt.want, len(tt.data))
			}
			stored, err := os.ReadFile(s.Path(got))
			if err != nil || !bytes.Equal(stored, tt.data) {
				t.Fatalf("stored blob = %q, %v", stored, err)
			}
			if n, err := s.Size(got); err != nil || n != size {
				t.Errorf("Size = %d, %v", n, err)
			}
			// Idempotent: writing it again reads nothing and succeeds.
			again, size2, err := s.WriteBlob(context.Background(), failReader{t}, got)
			if err != nil || again != got || size2 != size {
				t.Errorf("rewrite = %s, %d, %v", again, size2, err)
			}
			if left := ingestEntries(t, s); len(left) != 0 {
				t.Errorf("ingest not cleaned: %v", left)
			}
		})
	}
}

func TestWriteBlobCancelled(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.WriteBlob(ctx, bytes.NewReader(readFixture(t, "hello.txt")), helloDigest)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if s.Has(helloDigest) {
		t.Error("blob stored despite cancellation")
	}
}

func TestReadAccess(t *testing.T) {
	s := openStore(t)
	if _, _, err := s.WriteBlob(context.Background(), bytes.NewReader(readFixture(t, "hello.txt")), helloDigest); err != nil {
		t.Fatal(err)
	}
	missing := mustHash("sha256:" + strings.Repeat("0", 64))
	invalid := v1.Hash{Algorithm: "sha256", Hex: "../../../etc/passwd"}
	tests := []struct {
		name    string
		d       v1.Hash
		wantErr error
	}{
		{"present", helloDigest, nil},
		{"missing", missing, ErrNotFound},
		{"invalid", invalid, ErrInvalidDigest},
		{"upper case", v1.Hash{Algorithm: "sha256", Hex: strings.ToUpper(helloDigest.Hex)}, ErrInvalidDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := s.Open(tt.d)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open err = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				if !bytes.Equal(b, readFixture(t, "hello.txt")) {
					t.Errorf("Open read %q", b)
				}
			}
			if _, err := s.Size(tt.d); !errors.Is(err, tt.wantErr) {
				t.Errorf("Size err = %v, want %v", err, tt.wantErr)
			}
			if _, err := s.ReadBlob(tt.d, 1<<20); !errors.Is(err, tt.wantErr) {
				t.Errorf("ReadBlob err = %v, want %v", err, tt.wantErr)
			}
			if got := s.Has(tt.d); got != (tt.wantErr == nil) {
				t.Errorf("Has = %v", got)
			}
			if errors.Is(tt.wantErr, ErrInvalidDigest) && s.Path(tt.d) != "" {
				t.Errorf("Path(invalid) = %q, want empty", s.Path(tt.d))
			}
		})
	}
	if _, err := s.ReadBlob(helloDigest, 4); err == nil {
		t.Error("ReadBlob ignored its limit")
	}
}

func TestWriterCloseDiscards(t *testing.T) {
	s := openStore(t)
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(readFixture(t, "hello.txt")); err != nil {
		t.Fatal(err)
	}
	if w.Digest() != helloDigest {
		t.Errorf("Digest() = %s before commit", w.Digest())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.Commit(helloDigest); err == nil {
		t.Error("Commit after Close succeeded")
	}
	if s.Has(helloDigest) {
		t.Error("closed writer stored its blob")
	}
	if left := ingestEntries(t, s); len(left) != 0 {
		t.Errorf("ingest not cleaned: %v", left)
	}
}

func TestConcurrentWritersOfOneBlob(t *testing.T) {
	s := openStore(t)
	hello := readFixture(t, "hello.txt")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Open concurrently too: its ingest cleanup must not break
			// writers that are running.
			s2, err := Open(s.Root())
			if err != nil {
				errs <- err
				return
			}
			w, err := s2.NewWriter()
			if err != nil {
				errs <- err
				return
			}
			defer w.Close()
			if _, err := w.Write(hello); err != nil {
				errs <- err
				return
			}
			errs <- w.Commit(helloDigest)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	var blobs []v1.Hash
	if err := s.Walk(context.Background(), func(d v1.Hash, size int64) error {
		blobs = append(blobs, d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 1 || blobs[0] != helloDigest {
		t.Errorf("blobs = %v", blobs)
	}
	if left := ingestEntries(t, s); len(left) != 0 {
		t.Errorf("ingest not cleaned: %v", left)
	}
}

func TestDelete(t *testing.T) {
	s := openStore(t)
	if _, _, err := s.WriteBlob(context.Background(), bytes.NewReader(readFixture(t, "hello.txt")), helloDigest); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := s.Delete(helloDigest); err != nil {
			t.Fatal(err)
		}
	}
	if s.Has(helloDigest) {
		t.Error("blob still there after Delete")
	}
	if err := s.Delete(v1.Hash{Algorithm: "sha256", Hex: ".."}); !errors.Is(err, ErrInvalidDigest) {
		t.Errorf("Delete(invalid) = %v", err)
	}
}

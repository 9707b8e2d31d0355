package content

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func tarProducer(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		// Odd-sized writes, so that cuts fall inside writes.
		for len(data) > 0 {
			n := min(len(data), 12345)
			if _, err := w.Write(data[:n]); err != nil {
				return err
			}
			data = data[n:]
		}
		return nil
	}
}

// appendTo returns a change that appends to file k (a one-file change).
func appendTo(k int) func(int, []byte) []byte {
	return func(i int, data []byte) []byte {
		if i == k {
			return append(bytes.Clone(data), []byte("one more line\n")...)
		}
		return data
	}
}

func readMembers(t *testing.T, s *Store, info LayerInfo) []memberInfo {
	t.Helper()
	comp, ms, err := s.loadSidecar(info.Digest, info.Size)
	if err != nil {
		t.Fatal(err)
	}
	if comp != gzipCompressorID(DefaultGzipLevel) {
		t.Fatalf("sidecar compressor %q", comp)
	}
	return ms
}

// TestGzipMembers: a gzip layer is several members that decompress to the
// tar, cut at tar entries, the same whatever the number of workers.
func TestGzipMembers(t *testing.T) {
	data := mixedTar(t, 12<<20, nil)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var first LayerInfo
	for i, workers := range []int{1, 2, 5} {
		runtime.GOMAXPROCS(min(workers, 2))
		s := openStore(t)
		info, err := s.writeLayer(context.Background(), tarProducer(data), LayerOptions{}, workers)
		if err != nil {
			t.Fatal(err)
		}
		if got := decompress(t, s, info); !bytes.Equal(got, data) {
			t.Fatalf("workers=%d: layer does not decompress to its tar", workers)
		}
		if want := sha256.Sum256(data); info.DiffID.Hex != hex.EncodeToString(want[:]) {
			t.Fatalf("DiffID %s", info.DiffID)
		}
		ms := readMembers(t, s, info)
		if len(ms) < 8 {
			t.Fatalf("%d members for %d bytes", len(ms), len(data))
		}
		var u int64
		for _, m := range ms {
			if m.ULen > memberHardMax {
				t.Errorf("member of %d bytes", m.ULen)
			}
			u += m.ULen
		}
		if u != int64(len(data)) {
			t.Errorf("members hold %d bytes, tar %d", u, len(data))
		}
		if i == 0 {
			first = info
		} else if info != first {
			t.Errorf("workers=%d: %s, want %s", workers, info.Digest, first.Digest)
		}
	}
}

// TestGzipMembersOneFileChange: after a file grows, the members before and
// after the one holding it are the same bytes.
func TestGzipMembersOneFileChange(t *testing.T) {
	s := openStore(t)
	a, err := s.WriteLayer(context.Background(), tarProducer(mixedTar(t, 12<<20, nil)), LayerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.WriteLayer(context.Background(), tarProducer(mixedTar(t, 12<<20, appendTo(300))), LayerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ma, mb := readMembers(t, s, a), readMembers(t, s, b)
	type key struct {
		crc        uint32
		clen, ulen int64
	}
	old := map[key]bool{}
	for _, m := range ma {
		old[key{m.CRC, m.CLen, m.ULen}] = true
	}
	changed := 0
	for _, m := range mb {
		if !old[key{m.CRC, m.CLen, m.ULen}] {
			changed++
		}
	}
	if changed == 0 || changed > 2 {
		t.Errorf("%d of %d members changed after a one-file change, want 1 or 2", changed, len(mb))
	}
}

// TestGzipReuse: a layer written with the previous blob of its step reuses
// the unchanged members and is byte-identical to the same layer written
// afresh; a corrupt previous blob or sidecar changes neither the bytes nor
// their agreement with the DiffID.
func TestGzipReuse(t *testing.T) {
	oldTar := mixedTar(t, 12<<20, nil)
	newTar := mixedTar(t, 12<<20, appendTo(300))
	freshStore := openStore(t)
	fresh, err := freshStore.WriteLayer(context.Background(), tarProducer(newTar), LayerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		corrupt   func(t *testing.T, s *Store, prev LayerInfo)
		minReused int // members
		maxReused int
	}{
		{"intact", nil, 5, 1 << 30},
		{"no sidecar", func(t *testing.T, s *Store, prev LayerInfo) { os.Remove(s.SidecarPath(prev.Digest)) }, 0, 0},
		{"garbage sidecar", func(t *testing.T, s *Store, prev LayerInfo) {
			writeFile(t, s.SidecarPath(prev.Digest), []byte("{\"v\":1,"))
		}, 0, 0},
		{"oversized sidecar", func(t *testing.T, s *Store, prev LayerInfo) {
			writeFile(t, s.SidecarPath(prev.Digest), bytes.Repeat([]byte(" "), maxSidecar+1))
		}, 0, 0},
		{"other compressor", func(t *testing.T, s *Store, prev LayerInfo) {
			editSidecar(t, s, prev, func(sc map[string]any) {
				sc["compressor"] = "builder gzip members v1, klauspost/compress v0.0.1 gzip, level 6"
			})
		}, 0, 0},
		{"member out of bounds", func(t *testing.T, s *Store, prev LayerInfo) {
			editSidecar(t, s, prev, func(sc map[string]any) { sc["members"].([]any)[0].([]any)[1] = float64(1 << 40) })
		}, 0, 0},
		{"flipped byte in blob", func(t *testing.T, s *Store, prev LayerInfo) {
			ms := readMembers(t, s, prev)
			flipByte(t, s.Path(prev.Digest), ms[1].Off+ms[1].CLen/2)
			flipByte(t, s.Path(prev.Digest), ms[len(ms)-1].Off+ms[len(ms)-1].CLen-3) // in a trailer
		}, 5, len(readMembers(t, freshStore, fresh)) - 3},
		{"sidecar maps new bytes to old member", func(t *testing.T, s *Store, prev LayerInfo) {
			// The member holding the changed file: the sidecar now says its
			// old compressed bytes hold the new uncompressed bytes (their
			// length and CRC-32). Only decompressing and comparing stands
			// in the way.
			fs := openStore(t)
			info, err := fs.WriteLayer(context.Background(), tarProducer(newTar), LayerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			newMs := readMembers(t, fs, info)
			oldMs := readMembers(t, s, prev)
			editSidecar(t, s, prev, func(sc map[string]any) {
				rows := sc["members"].([]any)
				for i, m := range oldMs {
					if m.ULen != newMs[i].ULen || m.CRC != newMs[i].CRC {
						row := rows[i].([]any)
						row[3] = float64(newMs[i].CRC)
						row[2] = float64(newMs[i].ULen)
						return
					}
				}
				t.Fatal("no changed member")
			})
		}, 5, 1 << 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			prev, err := s.WriteLayer(context.Background(), tarProducer(oldTar), LayerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tt.corrupt != nil {
				tt.corrupt(t, s, prev)
			}
			var st LayerStats
			info, err := s.WriteLayer(context.Background(), tarProducer(newTar), LayerOptions{Previous: prev.Digest, Stats: &st})
			if err != nil {
				t.Fatal(err)
			}
			if info != fresh {
				t.Fatalf("layer with reuse %+v, afresh %+v", info, fresh)
			}
			if got := decompress(t, s, info); !bytes.Equal(got, newTar) {
				t.Fatal("layer does not decompress to its tar")
			}
			if st.Reused < tt.minReused || st.Reused > tt.maxReused {
				t.Errorf("reused %d of %d members, want %d-%d", st.Reused, st.Members, tt.minReused, tt.maxReused)
			}
			if tt.name == "intact" && st.Reused < st.Members-2 {
				t.Errorf("reused %d of %d members after a one-file change", st.Reused, st.Members)
			}
		})
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func editSidecar(t *testing.T, s *Store, info LayerInfo, edit func(map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(s.SidecarPath(info.Digest))
	if err != nil {
		t.Fatal(err)
	}
	var sc map[string]any
	if err := json.Unmarshal(data, &sc); err != nil {
		t.Fatal(err)
	}
	edit(sc)
	data, err = json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, s.SidecarPath(info.Digest), data)
}

func flipByte(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestGzipMembersGolden pins the blob of a fixed tar at the default level.
// If it fails after a klauspost/compress upgrade, the compressor's output
// changed: every gzip layer digest changes with it (say so in the commit),
// and sidecars written before name the old version, so nothing stale is
// reused.
func TestGzipMembersGolden(t *testing.T) {
	s := openStore(t)
	info, err := s.WriteLayer(context.Background(), tarProducer(mixedTar(t, 6<<20, nil)), LayerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Members at level 1 (DefaultGzipLevel), klauspost/compress v1.20.4.
	const want = "sha256:ba6181e1457d9ee341f85233383d5bf0ab3eda9210e65b70f7483eca5427ba66"
	if info.Digest.String() != want {
		t.Errorf("digest %s, want %s", info.Digest, want)
	}
}

// TestSidecarLifecycle: Delete removes a blob's sidecar; CleanSidecars
// removes sidecars left without their blob.
func TestSidecarLifecycle(t *testing.T) {
	s := openStore(t)
	info, err := s.WriteLayer(context.Background(), tarProducer(mixedTar(t, 1<<20, nil)), LayerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.SidecarPath(info.Digest)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(info.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.SidecarPath(info.Digest)); !os.IsNotExist(err) {
		t.Errorf("sidecar after Delete: %v", err)
	}
	info, err = s.WriteLayer(context.Background(), tarProducer(mixedTar(t, 1<<20, nil)), LayerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	orphan := s.SidecarPath(v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", 1)})
	writeFile(t, orphan, []byte("{}"))
	// A file in members/ that names no digest.
	stray := filepath.Join(filepath.Dir(orphan), ".tmp-123")
	writeFile(t, stray, []byte(`{"v":1,"compr`))
	if o, err := s.BadSidecars(); err != nil || len(o) != 2 || o[orphan] == nil || o[stray] == nil {
		t.Errorf("BadSidecars = %v, %v", o, err)
	}
	if n, err := s.CleanSidecars(false); n != 2 || err != nil {
		t.Errorf("CleanSidecars = %d, %v", n, err)
	}
	for _, p := range []string{orphan, stray} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s kept", p)
		}
	}
	if _, err := os.Stat(s.SidecarPath(info.Digest)); err != nil {
		t.Errorf("live sidecar removed: %v", err)
	}
	// A sidecar that does not describe its blob: kept by GC, reported by
	// check, removed by repair.
	writeFile(t, s.SidecarPath(info.Digest), []byte(`{"v":1,"size":3,"members":[]}`))
	if n, err := s.CleanSidecars(false); n != 0 || err != nil {
		t.Errorf("CleanSidecars(false) = %d, %v", n, err)
	}
	if o, err := s.BadSidecars(); err != nil || len(o) != 1 || o[s.SidecarPath(info.Digest)] == nil {
		t.Errorf("BadSidecars = %v, %v", o, err)
	}
	if n, err := s.CleanSidecars(true); n != 1 || err != nil {
		t.Errorf("CleanSidecars(true) = %d, %v", n, err)
	}
	if o, err := s.BadSidecars(); err != nil || len(o) != 0 {
		t.Errorf("BadSidecars after repair = %v, %v", o, err)
	}
}

// TestGzipMembersStdlib: Go's gzip reader, which reads members as one
// stream, reads a multi-member layer; so does a reader in single-member
// mode up to the first member only (what the spec allows).
func TestGzipMembersStdlib(t *testing.T) {
	s := openStore(t)
	data := mixedTar(t, 4<<20, nil)
	info, err := s.WriteLayer(context.Background(), tarProducer(data), LayerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(s.Path(info.Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	first, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) == 0 || len(first) >= len(data) || !bytes.Equal(first, data[:len(first)]) {
		t.Errorf("first member holds %d of %d bytes", len(first), len(data))
	}
}

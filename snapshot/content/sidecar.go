package content

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Sidecars: every gzip layer that WriteLayer stores gets a small JSON file
// at members/sha256/<hex of the blob> listing its members (offset and
// length in the blob, uncompressed length, CRC-32 of the uncompressed
// bytes) and the compressor that made them. A later
// layer of the same step copies the members whose uncompressed bytes did
// not change instead of compressing them again (LayerOptions.Previous).
// A sidecar is a hint: a missing, truncated or corrupt one only means
// that members are compressed afresh, and a reused member is decompressed
// and compared with the new input before it is written (prevLayer.reuse).

// sidecarVersion is the format version of a sidecar file.
const sidecarVersion = 1

// maxSidecar bounds the bytes read from a sidecar: about 100,000
// members, a layer of 100 GiB or more.
const maxSidecar = 16 << 20

const (
	gzipMinMember       = 18 // a 10-byte header and an 8-byte trailer
	maxMemberCompressed = memberHardMax + memberHardMax/8 + 1024
)

// memberInfo is one gzip member of a stored layer blob.
type memberInfo struct {
	Off, CLen, ULen int64
	CRC             uint32 // CRC-32 of the uncompressed bytes
}

type sidecarFile struct {
	V          int          `json:"v"`
	Compressor string       `json:"compressor"`
	Size       int64        `json:"size"` // of the blob
	Members    []sidecarRow `json:"members"`
}

// sidecarRow is a member as [offset, compressed length, uncompressed
// length, CRC-32 of the uncompressed bytes].
type sidecarRow [4]int64

func (m memberInfo) row() sidecarRow { return sidecarRow{m.Off, m.CLen, m.ULen, int64(m.CRC)} }

// compressVersion is the klauspost/compress version built in, from the
// build info; test binaries carry none ("unknown").
var compressVersion = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/klauspost/compress" {
				if d.Replace != nil {
					return d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
				}
				return d.Version
			}
		}
	}
	return "unknown"
})

// gzipCompressorID names the member compressor at level: this code's
// version, klauspost/compress's version and the level. Members are reused
// only from a sidecar naming the same compressor, so that a reused member
// is the one a fresh compression would give. TestGzipMembersGolden pins
// the output: bump "v1" when this code's output changes.
func gzipCompressorID(level int) string {
	return fmt.Sprintf("builder gzip members v1, klauspost/compress %s gzip, level %d", compressVersion(), level)
}

func (s *Store) sidecarDir() string { return filepath.Join(s.root, "members", "sha256") }

// SidecarPath returns the file that holds the member list of blob d,
// whether or not it exists ("" for an invalid digest).
func (s *Store) SidecarPath(d v1.Hash) string {
	if validate(d) != nil {
		return ""
	}
	return filepath.Join(s.sidecarDir(), d.Hex)
}

// writeSidecar stores the member list of blob d unless one is there. It is
// best effort: a sidecar only saves work later, so errors are returned for
// tests but callers ignore them. It is written like a blob, to a locked
// file in ingest/ (which Open removes if the writer dies) and renamed into
// place, but not synced: after a crash it may be missing or empty, which
// loadSidecar treats as no sidecar.
func (s *Store) writeSidecar(d v1.Hash, compressor string, size int64, members []memberInfo) error {
	dst := s.SidecarPath(d)
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	if err := os.MkdirAll(s.sidecarDir(), 0o700); err != nil {
		return err
	}
	sc := sidecarFile{V: sidecarVersion, Compressor: compressor, Size: size, Members: make([]sidecarRow, len(members))}
	for i, m := range members {
		sc.Members[i] = m.row()
	}
	data, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	w, err := s.NewWriter()
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.buf.Flush(); err != nil {
		return err
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		return err
	}
	w.done = true
	return w.f.Close()
}

// errBadSidecar marks a sidecar that cannot be used.
var errBadSidecar = errors.New("bad layer sidecar")

// loadSidecar reads the sidecar of blob d and checks it against the blob's
// size: members must tile the blob from offset 0 to its end, each within
// the sizes WriteLayer writes. It reads at most maxSidecar bytes.
func (s *Store) loadSidecar(d v1.Hash, blobSize int64) (compressor string, members []memberInfo, err error) {
	p := s.SidecarPath(d)
	if p == "" {
		return "", nil, errBadSidecar
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSidecar+1))
	if err != nil {
		return "", nil, err
	}
	if len(data) > maxSidecar {
		return "", nil, fmt.Errorf("%w: larger than %d bytes", errBadSidecar, maxSidecar)
	}
	var raw struct {
		V          int       `json:"v"`
		Compressor string    `json:"compressor"`
		Size       int64     `json:"size"`
		Members    [][]int64 `json:"members"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return "", nil, fmt.Errorf("%w: %w", errBadSidecar, err)
	}
	if raw.V != sidecarVersion || raw.Size != blobSize {
		return "", nil, fmt.Errorf("%w: version %d, size %d for a blob of %d bytes", errBadSidecar, raw.V, raw.Size, blobSize)
	}
	var off int64
	members = make([]memberInfo, 0, len(raw.Members))
	for i, r := range raw.Members {
		if len(r) != 4 || r[3] < 0 || r[3] > 0xffffffff {
			return "", nil, fmt.Errorf("%w: member %d", errBadSidecar, i)
		}
		m := memberInfo{Off: r[0], CLen: r[1], ULen: r[2], CRC: uint32(r[3])}
		if m.Off != off || m.CLen < gzipMinMember || m.CLen > maxMemberCompressed ||
			m.ULen < 0 || m.ULen > memberHardMax || m.CLen > blobSize-off {
			return "", nil, fmt.Errorf("%w: member %d", errBadSidecar, i)
		}
		off += m.CLen
		members = append(members, m)
	}
	if off != blobSize {
		return "", nil, fmt.Errorf("%w: members end at %d, blob at %d", errBadSidecar, off, blobSize)
	}
	return raw.Compressor, members, nil
}

// openPrevious opens the blob d and its sidecar for reuse by a layer
// written with compressor. It returns nil (compress everything) when
// either is missing, unreadable, inconsistent or made by another
// compressor; the caller closes the file when non-nil.
func (s *Store) openPrevious(d v1.Hash, compressor string) (*prevLayer, *os.File) {
	if validate(d) != nil {
		return nil, nil
	}
	f, err := os.OpenFile(s.Path(d), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil
	}
	comp, members, err := s.loadSidecar(d, fi.Size())
	if err != nil || comp != compressor {
		f.Close()
		return nil, nil
	}
	p := &prevLayer{r: f, byKey: make(map[memberKey][]memberInfo, len(members))}
	for _, m := range members {
		k := memberKey{m.CRC, m.ULen}
		if len(p.byKey[k]) < 4 { // a few candidates at most: each costs a decompression
			p.byKey[k] = append(p.byKey[k], m)
		}
	}
	return p, f
}

// deleteSidecar removes the sidecar of blob d, if any.
func (s *Store) deleteSidecar(d v1.Hash) error {
	if err := os.Remove(s.SidecarPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// CleanSidecars removes the sidecars whose blob is gone (a crash between
// deleting a blob and its sidecar, or a blob removed by hand), and with bad set
// also those that do not describe their blob (see BadSidecars); it returns
// how many it removed. Garbage collection calls it after deleting blobs,
// repair with bad set.
func (s *Store) CleanSidecars(bad bool) (int, error) {
	entries, err := os.ReadDir(s.sidecarDir())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("clean sidecars: %w", err)
	}
	n := 0
	for _, e := range entries {
		d := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if size, err := s.Size(d); validate(d) == nil && err == nil {
			if !bad {
				continue
			}
			if _, _, err := s.loadSidecar(d, size); err == nil {
				continue
			}
		}
		if err := os.Remove(filepath.Join(s.sidecarDir(), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("clean sidecars: %w", err)
		}
		n++
	}
	return n, nil
}

// BadSidecars lists, for check, the sidecar files that are of no use:
// those without their blob and those that do not describe it (unreadable,
// malformed, or members that do not tile the blob). Either is harmless,
// since sidecars are hints; CleanSidecars(true) removes them.
func (s *Store) BadSidecars() (map[string]error, error) {
	entries, err := os.ReadDir(s.sidecarDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list sidecars: %w", err)
	}
	out := map[string]error{}
	for _, e := range entries {
		p := filepath.Join(s.sidecarDir(), e.Name())
		d := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		size, err := s.Size(d)
		if validate(d) != nil || err != nil {
			out[p] = errors.New("no blob of that digest")
			continue
		}
		if _, _, err := s.loadSidecar(d, size); err != nil {
			out[p] = err
		}
	}
	return out, nil
}

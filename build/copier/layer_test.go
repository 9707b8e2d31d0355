package copier

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"builder/snapshot/archive"
)

// TestWriteLayerMatchesCopy runs every COPY/ADD line of every testdata
// case both ways, each into a fresh destination: Copy into an empty tree
// then the layer tar of that tree, and WriteLayer. Each line runs with its
// own destination and with the top-level destinations "/onepass" and
// "/onepass/", which WriteLayer covers. Where WriteLayer writes a layer,
// it must be byte for byte the other's; where Copy (or the diff of its
// tree) fails, WriteLayer must fail too. Enough lines must take the one
// pass for the comparison to mean something.
func TestWriteLayerMatchesCopy(t *testing.T) {
	needRoot(t)
	cases, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	compared, fallbacks := 0, 0
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		dir := filepath.Join("testdata", c.Name())
		t.Run(c.Name(), func(t *testing.T) {
			work := prepareCase(t, dir)
			_ = forEachLine(t, work, filepath.Join(work, "Dockerfile"), func(line string, src Source, req Request) error {
				for _, dest := range []string{req.Dest, "/onepass", "/onepass/"} {
					r := req
					r.Dest = dest
					switch compareOnePass(t, line+" (to "+dest+")", src, r) {
					case onePassSame:
						compared++
					case onePassRefused:
						fallbacks++
					}
				}
				return nil
			})
		})
	}
	t.Logf("%d requests compared, %d left to Copy", compared, fallbacks)
	if compared < 40 {
		t.Errorf("only %d requests took the one pass; the comparison means little", compared)
	}
}

type onePassResult int

const (
	onePassSame onePassResult = iota
	onePassRefused
	onePassBothFailed
)

// compareOnePass runs req both ways and reports the outcome, failing t on
// a difference.
func compareOnePass(t *testing.T, what string, src Source, req Request) onePassResult {
	t.Helper()
	dst := t.TempDir()
	var want bytes.Buffer
	copyErr := Copy(context.Background(), src, dst, req)
	if copyErr == nil {
		copyErr = archive.WriteTree(context.Background(), &want, dst)
	}
	if copyErr == nil {
		copyErr = whiteoutNames(want.Bytes()) // the snapshot diff refuses them
	}
	var got bytes.Buffer
	aw := archive.NewWriter(&got, nil)
	err := WriteLayer(context.Background(), src, req, aw)
	if err == nil {
		err = aw.Close()
	}
	switch {
	case errors.Is(err, ErrNotOnePass):
		return onePassRefused
	case copyErr != nil && err == nil:
		t.Errorf("%s: Copy fails (%v) but WriteLayer writes a layer", what, copyErr)
	case copyErr != nil:
		return onePassBothFailed
	case err != nil:
		t.Errorf("%s: WriteLayer: %v (Copy succeeds)", what, err)
	case !bytes.Equal(got.Bytes(), want.Bytes()):
		t.Errorf("%s: layers differ\n--- WriteLayer\n%s--- Copy\n%s", what, listTar(got.Bytes()), listTar(want.Bytes()))
	}
	return onePassSame
}

func whiteoutNames(layer []byte) error {
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(filepath.Base(h.Name), archive.WhiteoutPrefix) {
			return fmt.Errorf("%s: a file named like a whiteout", h.Name)
		}
	}
}

// listTar lists a tar's headers, one per line, for failure messages.
func listTar(layer []byte) string {
	var b strings.Builder
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(&b, "error: %v\n", err)
			}
			return b.String()
		}
		fmt.Fprintf(&b, "%c %s %o %d:%d %d %s %q %v\n", h.Typeflag, h.Name, h.Mode, h.Uid, h.Gid, h.Size, h.ModTime.UTC().Format("2006-01-02T15:04:05"), h.Linkname, h.PAXRecords)
	}
}

// TestIDMap checks the owner test WriteLayer makes in a user namespace (a
// rootless builder's, here its uid_map): IDs outside the ranges are ones
// Copy's chown fails on, so the one pass must leave them to it.
func TestIDMap(t *testing.T) {
	ranges, err := readIDMap("testdata/uid_map.rootless")
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[int]bool{0: true, 1: true, 1000: true, 65536: true, 65537: false, -1: false, 1 << 31: false} {
		if got := mapped(ranges, id); got != want {
			t.Errorf("mapped(%d) = %v, want %v", id, got, want)
		}
	}
	ranges, err = readIDMap("/proc/self/uid_map")
	if err != nil || !mapped(ranges, 0) {
		t.Errorf("this namespace's map %v (%v) does not map root", ranges, err)
	}
}

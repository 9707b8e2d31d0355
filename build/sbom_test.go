package build

import (
	"archive/tar"
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// scanEntry is one tar entry of a scan's layer.
type scanEntry struct {
	name, body, link string
	typ              byte
}

// scanImage is an image whose last layer holds entries, as a scan's RUN
// leaves it.
func scanImage(t *testing.T, entries []scanEntry) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: 0o644, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestReadScanOutputHostile: what a hostile scanner leaves in its layer
// is read within bounds and never from outside /run/out: symlinks and
// hard links to the host's or the image's files, documents in other
// directories or climbing out of /run/out, nested directories, oversized
// documents, too many or too much in total, and non-JSON.
func TestReadScanOutputHostile(t *testing.T) {
	lim := scanLimits{each: 64, total: 100, files: 3}
	doc := `{"spdxVersion":"SPDX-2.3"}`
	many := []scanEntry{{name: "run/out/", typ: tar.TypeDir}}
	for i := range 4 {
		many = append(many, scanEntry{name: "run/out/" + strconv.Itoa(i) + ".spdx.json", body: "{}"})
	}
	for _, tc := range []struct {
		name    string
		entries []scanEntry
		want    []string // the documents read
		err     string
	}{
		{"plain", []scanEntry{{name: "run/out/a.spdx.json", body: doc}, {name: "run/out/notes.txt", body: "x"}}, []string{"a.spdx.json"}, ""},
		{"symlinks", []scanEntry{
			{name: "run/out/passwd.spdx.json", typ: tar.TypeSymlink, link: "/etc/passwd"},
			{name: "run/out/up.spdx.json", typ: tar.TypeSymlink, link: "../../etc/shadow"},
			{name: "run/out/a.spdx.json", body: doc},
		}, []string{"a.spdx.json"}, ""},
		{"hardlink", []scanEntry{{name: "etc/secret", body: `{"secret":1}`}, {name: "run/out/h.spdx.json", typ: tar.TypeLink, link: "etc/secret"}}, nil, ""},
		{"elsewhere", []scanEntry{
			{name: "tmp/x.spdx.json", body: doc},
			{name: "run/out/sub/nested.spdx.json", body: doc},
			{name: "run/out/../../etc/climb.spdx.json", body: doc},
			{name: "run/x.spdx.json", body: doc},
		}, nil, ""},
		{"out-is-a-symlink", []scanEntry{{name: "run/out", typ: tar.TypeSymlink, link: "/etc"}}, nil, ""},
		{"dot-path", []scanEntry{{name: "./run/out/./d.spdx.json", body: doc}}, []string{"d.spdx.json"}, ""},
		{"too-large", []scanEntry{{name: "run/out/big.spdx.json", body: `{"x":"` + strings.Repeat("a", 100) + `"}`}}, nil, "more than 64"},
		{"too-much", []scanEntry{{name: "run/out/a.spdx.json", body: `{"x":"` + strings.Repeat("a", 50) + `"}`},
			{name: "run/out/b.spdx.json", body: `{"x":"` + strings.Repeat("b", 50) + `"}`}}, nil, "more than 100 bytes"},
		{"too-many", many, nil, "more than 3 documents"},
		{"not-json", []scanEntry{{name: "run/out/x.spdx.json", body: "not json"}}, nil, "is not JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := readScanOutput(scanImage(t, tc.entries), lim)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) != len(tc.want) {
				t.Fatalf("read %d documents, want %v", len(docs), tc.want)
			}
			for _, n := range tc.want {
				if string(docs[n]) != doc {
					t.Errorf("%s = %q", n, docs[n])
				}
			}
		})
	}
}

package build

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"builder/build/buildtest"
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
// hard links to the host's or the image's files, statements in other
// directories or climbing out of /run/out, nested directories, oversized
// statements, too many or too much in total; and each file is one in-toto
// statement with an SPDX predicate, as BuildKit unbundles a scan.
func TestReadScanOutputHostile(t *testing.T) {
	lim := scanLimits{each: 300, total: 450, files: 3}
	doc := `{"spdxVersion":"SPDX-2.3"}`
	stmt := func(pred string) string {
		return `{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","predicate":` + pred + `}`
	}
	sd := stmt(doc)
	many := []scanEntry{{name: "run/out/", typ: tar.TypeDir}}
	for i := range 4 {
		many = append(many, scanEntry{name: "run/out/" + strconv.Itoa(i) + ".spdx.json", body: stmt("{}")})
	}
	for _, tc := range []struct {
		name    string
		entries []scanEntry
		want    []string // the documents read
		err     string
	}{
		{"plain", []scanEntry{{name: "run/out/a.spdx.json", body: sd}}, []string{"a.spdx.json"}, ""},
		{"any-name", []scanEntry{{name: "run/out/spdx.json", body: sd}, {name: "run/out/.wh.gone", body: ""}}, []string{"spdx.json"}, ""},
		{"other-file", []scanEntry{{name: "run/out/a.spdx.json", body: sd}, {name: "run/out/notes.txt", body: "x"}}, nil, "/run/out/notes.txt: decode in-toto statement"},
		{"symlinks", []scanEntry{
			{name: "run/out/passwd.spdx.json", typ: tar.TypeSymlink, link: "/etc/passwd"},
			{name: "run/out/up.spdx.json", typ: tar.TypeSymlink, link: "../../etc/shadow"},
			{name: "run/out/a.spdx.json", body: sd},
		}, []string{"a.spdx.json"}, ""},
		{"hardlink", []scanEntry{{name: "etc/secret", body: stmt(`{"secret":1}`)}, {name: "run/out/h.spdx.json", typ: tar.TypeLink, link: "etc/secret"}}, nil, ""},
		{"elsewhere", []scanEntry{
			{name: "tmp/x.spdx.json", body: sd},
			{name: "run/out/sub/", typ: tar.TypeDir},
			{name: "run/out/sub/nested.spdx.json", body: sd},
			{name: "run/out/../../etc/climb.spdx.json", body: sd},
			{name: "run/x.spdx.json", body: sd},
		}, nil, ""},
		{"out-is-a-symlink", []scanEntry{{name: "run/out", typ: tar.TypeSymlink, link: "/etc"}}, nil, ""},
		{"dot-path", []scanEntry{{name: "./run/out/./d.spdx.json", body: sd}}, []string{"d.spdx.json"}, ""},
		{"too-large", []scanEntry{{name: "run/out/big.spdx.json", body: stmt(`{"x":"` + strings.Repeat("a", 300) + `"}`)}}, nil, "more than 300"},
		{"too-much", []scanEntry{{name: "run/out/a.spdx.json", body: stmt(`{"x":"` + strings.Repeat("a", 50) + `"}`)},
			{name: "run/out/b.spdx.json", body: stmt(`{"x":"` + strings.Repeat("b", 50) + `"}`)},
			{name: "run/out/c.spdx.json", body: stmt(`{"x":"` + strings.Repeat("c", 50) + `"}`)}}, nil, "more than 450 bytes"},
		{"too-many", many, nil, "more than 3 statements"},
		{"not-json", []scanEntry{{name: "run/out/x.spdx.json", body: "not json"}}, nil, "decode in-toto statement"},
		{"bare-spdx", []scanEntry{{name: "run/out/x.spdx.json", body: doc}}, nil, `predicate type ""`},
		{"other-predicate", []scanEntry{{name: "run/out/x.spdx.json", body: strings.Replace(sd, "https://spdx.dev/Document", "https://slsa.dev/provenance/v1", 1)}}, nil, "predicate type"},
		{"two-statements", []scanEntry{{name: "run/out/x.spdx.json", body: sd + sd}}, nil, "not a single in-toto statement"},
		{"no-predicate", []scanEntry{{name: "run/out/x.spdx.json", body: stmt("null")}}, nil, "has no predicate"},
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

// TestSBOMScanner ports BuildKit's testSBOMScannerImage and
// testSBOMScannerArgs (frontend/dockerfile/dockerfile_test.go, v0.26.2):
// generator images built from testdata/builds/sbom write in-toto statements
// into $BUILDKIT_SCAN_DESTINATION, under any file name, and the SBOMs are
// their SPDX predicates; the extras are the context and the stages that
// BUILDKIT_SBOM_SCAN_CONTEXT and BUILDKIT_SBOM_SCAN_STAGE ask for. The
// counts were checked on buildkitd v0.26.2 (buildctl --opt
// attest:sbom=generator=…: the attestation manifest's layers).
func TestSBOMScanner(t *testing.T) {
	buildtest.RequireRoot(t)
	f := newFixture(t)
	for _, g := range []string{"scanner-image", "scanner-args"} {
		f.mustBuild(copyCase(t, "builds/sbom/"+g), func(o *Options) { o.Tags = []string{"sbom-" + g} })
	}
	for _, tc := range []struct {
		name, target, generator string
		args                    map[string]string
		want                    []string // the predicates' "name", sorted
	}{
		{"image", "target-image", "scanner-image", nil, []string{"sbom-scan"}},
		{"args-none", "target-args", "scanner-args", map[string]string{"BUILDKIT_SBOM_SCAN_CONTEXT": "true", "BUILDKIT_SBOM_SCAN_STAGE": "true"},
			[]string{"core"}},
		{"args-stages", "target-args-stages", "scanner-args", nil, []string{"core", "extra", "extra", "extra"}},
		{"args-stages-off", "target-args-stages", "scanner-args", map[string]string{"BUILDKIT_SBOM_SCAN_CONTEXT": "false", "BUILDKIT_SBOM_SCAN_STAGE": "false"},
			[]string{"core"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyCase(t, "builds/sbom/"+tc.target)
			var opts Options
			res, log := f.mustBuild(dir, func(o *Options) {
				maps.Copy(o.BuildArgs, tc.args)
				opts = *o
			})
			docs, err := f.b.ScanSBOM(context.Background(), res, "sbom-"+tc.generator, opts)
			if err != nil {
				t.Fatalf("scan: %v\nlog:\n%s", err, log)
			}
			var got []string
			for _, n := range slices.Sorted(maps.Keys(docs)) {
				var p struct {
					Name string `json:"name"`
				}
				if err := json.Unmarshal(docs[n], &p); err != nil {
					t.Fatalf("%s: %v: %s", n, err, docs[n])
				}
				got = append(got, p.Name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("SBOM predicates named %q, want %q", got, tc.want)
			}
		})
	}
}

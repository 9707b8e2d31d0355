package archive

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"builder/internal/testenv"
)

// hostileTar returns a small layer whose entries try to leave the root
// through a symlink to dir, "..", an absolute path and a hard link.
func hostileTar(dir string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	reg := func(name, data string) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))})
		tw.Write([]byte(data))
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: dir, Mode: 0o777})
	reg("l/canary", "pwned")
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "up", Linkname: "../sibling", Mode: 0o777})
	reg("up/pwned", "pwned")
	reg("../canary", "pwned")
	reg(dir+"/pwned", "pwned")
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "h", Linkname: "../canary"})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ".wh..wh..opq", Mode: 0o644})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "up/.wh.x", Mode: 0o644})
	tw.Close()
	return buf.Bytes()
}

// FuzzApply applies random tar streams and checks that nothing outside the
// root changed: a canary file and an empty sibling directory next to it.
// The seeds are the fixtures in testdata and testdata/fuzz/FuzzApply.
func FuzzApply(f *testing.F) {
	testenv.RequireRoot(f)
	tars, _ := filepath.Glob("testdata/*.tar")
	for _, p := range tars {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		root := filepath.Join(dir, "root")
		for _, d := range []string{root, filepath.Join(dir, "sibling")} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		canary := filepath.Join(dir, "canary")
		if err := os.WriteFile(canary, []byte("untouched"), 0o644); err != nil {
			t.Fatal(err)
		}
		// The hostile seed names this run's directory.
		data = bytes.ReplaceAll(data, []byte("/FUZZDIR"), []byte(dir))
		_, _ = Apply(root, bytes.NewReader(data))

		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{"canary", "root", "sibling"}) {
			t.Errorf("entries next to the root: %q", names)
		}
		if b, err := os.ReadFile(canary); err != nil || string(b) != "untouched" {
			t.Errorf("canary = %q, %v", b, err)
		}
		if sib, err := os.ReadDir(filepath.Join(dir, "sibling")); err != nil || len(sib) != 0 {
			t.Errorf("sibling dir: %v, %v", sib, err)
		}
	})
}

// hostileSeeds are the named seeds of testdata/fuzz/FuzzApply beyond
// the fixtures in testdata: each tries another way out of the root, or
// another way to hang or crash the extractor. "/FUZZDIR" stands for the
// directory that holds the root, the canary and the sibling.
func hostileSeeds() map[string][]byte {
	build := func(entries ...func(tw *tar.Writer)) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			e(tw)
		}
		tw.Close()
		return buf.Bytes()
	}
	hdr := func(h tar.Header) func(*tar.Writer) {
		return func(tw *tar.Writer) { tw.WriteHeader(&h) }
	}
	reg := func(name, data string) func(*tar.Writer) {
		return func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))})
			tw.Write([]byte(data))
		}
	}
	link := func(name, target string) func(*tar.Writer) {
		return hdr(tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
	}
	return map[string][]byte{
		"hostile": hostileTar("/FUZZDIR"),
		// A FIFO replaced by a file: opening the FIFO would block.
		"fifo-then-file": build(hdr(tar.Header{Typeflag: tar.TypeFifo, Name: "p", Mode: 0o644}), reg("p", "data"),
			hdr(tar.Header{Typeflag: tar.TypeFifo, Name: "q", Mode: 0o644}), link("r", "q"), reg("r", "x")),
		// Device nodes and a setuid file: kept as entries, never opened.
		"devices-setuid": build(hdr(tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}),
			hdr(tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Mode: 0o660, Devmajor: 8}),
			hdr(tar.Header{Typeflag: tar.TypeReg, Name: "suid", Mode: 0o4755}), reg("null", "over the device")),
		// A directory replaced by a symlink out of the root, then written
		// through.
		"dir-then-symlink": build(hdr(tar.Header{Typeflag: tar.TypeDir, Name: "a/", Mode: 0o755}), reg("a/x", "in"),
			link("a", "/FUZZDIR"), reg("a/canary", "pwned"), reg("a/new", "pwned")),
		// A hard link to a symlink that points out, then a write through
		// the hard link's name.
		"hardlink-to-outlink": build(link("out", "../canary"), hdr(tar.Header{Typeflag: tar.TypeLink, Name: "h", Linkname: "out"}),
			reg("h", "pwned")),
		// Symlink chains climbing above the root and looping.
		"symlink-climb-loop": build(link("s1", "../../../../.."), link("s2", "s1/FUZZDIR"), reg("s2/canary", "pwned"),
			link("loop1", "loop2"), link("loop2", "loop1"), reg("loop1/x", "pwned")),
		// Whiteouts and an opaque marker that name the parent or the
		// outside.
		"whiteout-escapes": build(hdr(tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755}), link("d/up", ".."),
			reg("d/up/.wh.canary", ""), reg(".wh...", ""), reg("d/.wh...", ""), link("o", "/FUZZDIR"), reg("o/.wh..wh..opq", "")),
		// PAX records with a long name that climbs out.
		"pax-long-dotdot": build(hdr(tar.Header{Typeflag: tar.TypeReg, Name: strings.Repeat("x/../", 40) + "../canary", Mode: 0o644,
			Format: tar.FormatPAX, PAXRecords: map[string]string{"path": "../../canary"}})),
		// A truncated stream: the header promises more data than follows.
		"truncated": build(reg("big", strings.Repeat("z", 4096)))[:1024],
	}
}

// TestWriteFuzzSeeds regenerates the named seeds in testdata/fuzz/FuzzApply
// when BUILDER_WRITE_FUZZ_SEEDS is set; it checks nothing otherwise.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BUILDER_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set BUILDER_WRITE_FUZZ_SEEDS to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzApply")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range hostileSeeds() {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n[]byte(")
		b.WriteString(strconvQuote(data))
		b.WriteString(")\n")
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func strconvQuote(b []byte) string { return strconv.Quote(string(b)) }

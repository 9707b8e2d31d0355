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
	if os.Geteuid() != 0 {
		f.Skip("needs root")
	}
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

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzApply/hostile when
// BUILDER_WRITE_FUZZ_SEEDS is set; it checks nothing otherwise.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BUILDER_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set BUILDER_WRITE_FUZZ_SEEDS to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzApply")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("go test fuzz v1\n[]byte(")
	b.WriteString(strconvQuote(hostileTar("/FUZZDIR")))
	b.WriteString(")\n")
	if err := os.WriteFile(filepath.Join(dir, "hostile"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func strconvQuote(b []byte) string { return strconv.Quote(string(b)) }

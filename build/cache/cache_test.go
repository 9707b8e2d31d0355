package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Keys of the records in testdata/store-v1, which the code before this
// package wrote (a RUN with a layer, then an empty RUN on it).
const (
	v1FullKey  = Key("3865da303f0f208b82036b7e9aa25dd8c5354966baffe0fb42bb5c721b006145")
	v1EmptyKey = Key("929d1076b3742857f7774d582dad74d05d355be3921b1489b7eec8f6ec4e3060")
	v1StepID   = "0123456789abcdef0123456789abcdef"
	v1Sum      = "sha256:0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"
)

// openV1 opens a copy of testdata/store-v1 (Get touches the files).
func openV1(t *testing.T) *Cache {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/store-v1")); err != nil {
		t.Fatal(err)
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReadV1Store reads records written before Record was shared with the
// exported format, and checks that writing them again gives the same
// bytes (a record with a layer) or the same record (an empty record, whose
// zero size and media type are now left out).
func TestReadV1Store(t *testing.T) {
	c := openV1(t)
	full, ok, err := c.Get(v1FullKey)
	if err != nil || !ok {
		t.Fatalf("Get: %v, %v", ok, err)
	}
	if full.Key != v1FullKey || full.Empty || full.Size != 102 || full.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" ||
		full.Digest.Hex != "6ab656198dc89cd14116ec494606520764c2c6ffb11f77d62da44c50f913d4f6" ||
		full.DiffID.Hex != "fa01e42d19005c93c2a6fc09347768cc08a524c9a3d7cc27b5b992321e01474a" || full.Created.Nanosecond() != 123456789 {
		t.Errorf("record with a layer: %+v", full)
	}
	empty, ok, err := c.Get(v1EmptyKey)
	if err != nil || !ok || !empty.Empty || empty.Key != v1EmptyKey || empty.Size != 0 || empty.MediaType != "" {
		t.Fatalf("empty record: %+v, %v, %v", empty, ok, err)
	}
	// The key is the sha256 of the preimage kept, and a Preimage parsed
	// from it hashes to the same key.
	for _, r := range []Record{full, empty} {
		sum := sha256.Sum256(r.Preimage)
		var p Preimage
		if err := json.Unmarshal(r.Preimage, &p); err != nil {
			t.Fatal(err)
		}
		if k, dt := p.Key(); hex.EncodeToString(sum[:]) != string(r.Key) || k != r.Key || !bytes.Equal(dt, r.Preimage) {
			t.Errorf("record %s: preimage hashes to %x, Key() gives %s", r.Key, sum, k)
		}
	}
	n := 0
	if err := c.Walk(func(e Entry) error {
		n++
		if e.Err != nil || (e.Key != v1FullKey && e.Key != v1EmptyKey) || e.Used.IsZero() {
			t.Errorf("Walk: %+v", e)
		}
		return nil
	}); err != nil || n != 2 {
		t.Fatalf("Walk: %d records, %v", n, err)
	}

	again, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Record{full, empty} {
		if err := again.Put(r); err != nil {
			t.Fatal(err)
		}
		old, _ := os.ReadFile(filepath.Join("testdata/store-v1", string(r.Key)+".json"))
		now, _ := os.ReadFile(filepath.Join(again.Dir(), string(r.Key)+".json"))
		if !r.Empty && !bytes.Equal(old, now) {
			t.Errorf("record %s written again:\n%s\nwas\n%s", r.Key, now, old)
		}
		var a, b Record
		if json.Unmarshal(old, &a) != nil || json.Unmarshal(now, &b) != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("record %s reads back as %+v, was %+v", r.Key, b, a)
		}
		if bytes.Contains(now, []byte(`"key"`)) {
			t.Errorf("record %s: the local file holds its key: %s", r.Key, now)
		}
	}
	if sum, ok := c.GetSum(strings.Repeat("ab", 32)); !ok || sum != v1Sum {
		t.Errorf("GetSum = %q, %v", sum, ok)
	}
}

// TestExplainV1Store explains misses against the step index, file list and
// redact key an older store kept, with the redacted values that store's
// builds printed.
func TestExplainV1Store(t *testing.T) {
	c := openV1(t)
	prev, ok := c.LastStep(v1StepID)
	if !ok || prev.Key != v1FullKey || prev.Text != "RUN echo $V > /hello.txt" {
		t.Fatalf("LastStep: %+v, %v", prev, ok)
	}
	var cur Preimage
	if err := json.Unmarshal(prev.Preimage, &cur); err != nil {
		t.Fatal(err)
	}
	isArg := func(k string) bool { return k == "V" }
	with := func(f func(p *Preimage)) Preimage {
		p := cur
		p.State = map[string]string{}
		for k, v := range cur.State {
			p.State[k] = v
		}
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name string
		miss Miss
		want string
	}{
		{"no earlier build", Miss{}, "no earlier build of this step is recorded"},
		{"text", Miss{Text: "RUN  echo   other", Preimage: cur}, `instruction changed: was "RUN echo $V > /hello.txt"`},
		// "value 31363c6bb9b7" is what the old code printed for "one"
		// under this store's key.
		{"build arg", Miss{Text: prev.Text, IsArg: isArg, Preimage: with(func(p *Preimage) { p.State["env"] = `["PATH=/bin","V=two"]` })},
			"build arg V changed: " + c.Redact("two") + ", was value 31363c6bb9b7"},
		{"env removed", Miss{Text: prev.Text, IsArg: isArg, Preimage: with(func(p *Preimage) { p.State["env"] = `["V=one"]` })},
			"environment variable PATH removed (was " + c.Redact("/bin") + ")"},
		{"plain state", Miss{Text: prev.Text, Preimage: with(func(p *Preimage) { p.State["network"] = "none" })},
			`network changed: "none", was "host"`},
		{"redacted state", Miss{Text: prev.Text, Preimage: with(func(p *Preimage) { p.State["workdir"] = "/app" })},
			"workdir changed: " + c.Redact("/app") + ", was " + c.Redact("/")},
		{"args", Miss{Text: prev.Text, Preimage: with(func(p *Preimage) { p.Args = []string{"/bin/sh", "-c", "echo one > /x"} })},
			"instruction arguments changed (a variable's value): argument 3 is " + c.Redact("echo one > /x") + ", was " + c.Redact(cur.Args[2])},
		{"base", Miss{Text: prev.Text, Preimage: with(func(p *Preimage) { p.Parent = "image:sha256:22" })},
			"base image changed: config sha256:22, was sha256:" + strings.Repeat("1", 64)},
		{"parent", Miss{Text: prev.Text, Preimage: with(func(p *Preimage) { p.Inputs = map[string]string{"script": "x"} })},
			"heredoc content changed"},
		{"gone", Miss{Text: prev.Text, Preimage: cur}, "the step's record is gone from the cache (pruned, or its layer was removed)"},
	} {
		p := &prev
		if tc.name == "no earlier build" {
			p = nil
		}
		if got := c.Explain(p, tc.miss); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := c.Redact("one"); got != "value 31363c6bb9b7" {
		t.Errorf(`Redact("one") = %q under the old store's key, the old code gave "value 31363c6bb9b7"`, got)
	}
	if got := c.Redact(""); got != `""` {
		t.Errorf(`Redact("") = %q`, got)
	}

	// A COPY whose source checksum changed is explained from the file
	// list kept for the old checksum.
	copyPrev := Step{Text: "COPY src/ /src/"}
	copyPrev.Preimage, _ = json.Marshal(Preimage{Op: "copy", Inputs: map[string]string{"sources": v1Sum}})
	files := map[string]string{"src/a.txt": "-rw-r--r-- 2 ffff", "src/b.txt": "-rw-r--r-- 1 0000"}
	got := c.Explain(&copyPrev, Miss{Text: copyPrev.Text, Files: files,
		Preimage: Preimage{Op: "copy", Inputs: map[string]string{"sources": "sha256:" + strings.Repeat("e", 64)}}})
	if want := "source files changed src/a.txt; added src/b.txt"; got != want {
		t.Errorf("COPY: %q, want %q", got, want)
	}
}

// TestCacheSums: remembered COPY source checksums round-trip; a damaged or
// missing one is a miss, never a wrong sum.
func TestCacheSums(t *testing.T) {
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k := strings.Repeat("ab", 32)
	sum := "sha256:" + strings.Repeat("0f", 32)
	if _, ok := c.GetSum(k); ok {
		t.Fatal("a sum before any was stored")
	}
	if err := c.PutSum(k, sum); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.GetSum(k); !ok || got != sum {
		t.Errorf("GetSum = %q, %v; want %q", got, ok, sum)
	}
	if err := os.WriteFile(filepath.Join(c.dir, sumsDir, k), []byte("sha256:cut"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.GetSum(k); ok {
		t.Errorf("a damaged sum was served: %q", got)
	}
	if err := c.PutSum("../escape", sum); err == nil {
		t.Error("PutSum took a key that is not a hex sha256")
	}
}

// TestPutRejectsBadKey: a record's key names its file, so a key that is
// not a hex sha256 is refused rather than written elsewhere.
func TestPutRejectsBadKey(t *testing.T) {
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []Key{"", "../x", Key(strings.Repeat("A", 64))} {
		if err := c.Put(Record{Key: k, Empty: true}); err == nil {
			t.Errorf("Put(%q) succeeded", k)
		}
	}
}

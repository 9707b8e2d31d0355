package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"builder/build/cacheio"
	"builder/build/progress"
	"builder/build/secrets"
	"builder/export"
)

// TestSecretsLeaveNoTrace passes canary values through --secret (file and
// env) and an HTTP_PROXY build arg with credentials, checks that RUN saw
// each (by hash), and then greps for them everywhere the build leaves
// something: every file under the store root (layers decompressed,
// configs, history, manifests, cache records), the plain and rawjson
// progress output, an OCI archive export (its blobs decompressed), an
// exported cache (--cache-to type=local, mode=max, with cache mounts) and
// an inline cache. A build arg DB_PASSWORD, different in each build, must
// not appear in either progress output, though the builds explain their
// cache misses.
func TestSecretsLeaveNoTrace(t *testing.T) {
	f := newFixture(t)
	canary := func(what string) string {
		var b [12]byte
		rand.Read(b[:])
		return "CANARY" + what + hex.EncodeToString(b[:])
	}
	secretA, secretB, proxyPass := canary("a"), canary("b"), canary("p")
	canaries := []string{secretA, secretB, proxyPass}
	sum := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:])
	}
	file := filepath.Join(t.TempDir(), "a.txt")
	if err := os.WriteFile(file, []byte(secretA), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SECRET_B_VAR", secretB)
	proxy := "http://user:" + proxyPass + "@127.0.0.1:9/"
	srcs := map[string]secrets.Source{}
	for _, s := range []string{"id=a,src=" + file, "id=b,env=SECRET_B_VAR"} {
		id, sec, err := secrets.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		srcs[id] = sec
	}
	cacheDir := filepath.Join(t.TempDir(), "cache")
	var cacheTo []cacheio.Spec
	for _, v := range []string{"type=local,dest=" + cacheDir + ",mode=max,cache-mounts=true", "type=inline"} {
		spec, err := cacheio.ParseExport(v)
		if err != nil {
			t.Fatal(err)
		}
		cacheTo = append(cacheTo, spec)
	}
	var outputs []string
	var last *Result
	var passwords []string
	dir := copyCase(t, "builds/secrets") // one path: the second build's misses are explained
	for _, mode := range []progress.Mode{progress.Plain, progress.JSON} {
		passwords = append(passwords, canary("pw"))
		var log bytes.Buffer
		res, _, err := f.build(dir, func(o *Options) {
			o.Progress = progress.New(&log, mode)
			// Both progress modes show every step run: the second build
			// misses because DB_PASSWORD changed, and explains it.
			o.NoCache = mode == progress.Plain
			o.Secrets = srcs
			o.CacheTo = cacheTo
			o.BuildArgs["HTTP_PROXY"] = proxy
			o.BuildArgs["SUM_A"] = sum(secretA)
			o.BuildArgs["SUM_B"] = sum(secretB)
			o.BuildArgs["SUM_PROXY"] = sum(proxy)
			o.BuildArgs["DB_PASSWORD"] = passwords[len(passwords)-1]
			o.ExplainCache = true
		})
		o := log.String()
		if err != nil {
			t.Fatalf("build (%s): %v\n%s", mode, err, o)
		}
		outputs = append(outputs, o)
		last = res
	}
	if !strings.Contains(outputs[1], `"`) || !strings.Contains(outputs[0], "#") {
		t.Fatalf("progress output does not look like plain and rawjson:\n%s\n%s", outputs[0], outputs[1])
	}
	u := unpack(t, last.Image)
	for _, p := range []string{"a-ok", "b-ok", "proxy-ok"} {
		readFile(t, u.rootfs, p) // the RUNs saw the values
	}

	var found []string
	check := func(where string, data []byte) {
		for _, c := range canaries {
			if bytes.Contains(data, []byte(c)) {
				found = append(found, fmt.Sprintf("%s holds %s", where, c[:7]))
			}
		}
	}
	for i, o := range outputs {
		check(fmt.Sprintf("progress output %d", i), []byte(o))
		for _, pw := range passwords {
			if strings.Contains(o, pw) {
				found = append(found, fmt.Sprintf("progress output %d holds build arg value %s", i, pw[:8]))
			}
		}
	}
	scanned := scanTree(t, f.root, check)
	scanTree(t, u.rootfs, check)
	oci := filepath.Join(t.TempDir(), "image.tar")
	w, err := os.Create(oci)
	if err != nil {
		t.Fatal(err)
	}
	if err := export.WriteOCIArchive(context.Background(), w, last.Image, "secrets"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	scanFile(t, oci, "oci export", check)
	if n := scanTree(t, cacheDir, check); n < 3 {
		t.Errorf("the exported cache holds only %d files", n)
	}
	if scanned < 10 {
		t.Errorf("scanned only %d files under the store", scanned)
	}
	for _, s := range found {
		t.Error(s)
	}
}

// scanTree checks every regular file under dir and returns how many it
// read.
func scanTree(t *testing.T, dir string, check func(string, []byte)) int {
	t.Helper()
	n := 0
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			n++
			scanFile(t, p, p, check)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func scanFile(t *testing.T, path, where string, check func(string, []byte)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	scanBytes(t, where, data, check, 0)
}

// scanBytes checks data as it is, decompressed when it is gzip or zstd,
// and entry by entry when it is a tar (an export or a layer), recursively.
func scanBytes(t *testing.T, where string, data []byte, check func(string, []byte), depth int) {
	t.Helper()
	check(where, data)
	if depth > 3 || len(data) < 4 {
		return
	}
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) || bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		rc, err := export.Decompress(io.NopCloser(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		plain, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("decompress %s: %v", where, err)
		}
		scanBytes(t, where+" (decompressed)", plain, check, depth+1)
		return
	}
	if len(data) >= 512 && bytes.Equal(data[257:262], []byte("ustar")) {
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatalf("read tar %s: %v", where, err)
			}
			check(where+": header "+h.Name, []byte(fmt.Sprint(h.Name, h.Linkname, h.PAXRecords)))
			if h.Typeflag == tar.TypeReg {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatalf("read tar %s: %v", where, err)
				}
				scanBytes(t, where+": "+h.Name, b, check, depth+1)
			}
		}
	}
}

// TestScanBytesFindsNested makes sure the scanner of TestSecretsLeaveNoTrace
// sees a value inside a gzip-compressed tar inside a tar.
func TestScanBytesFindsNested(t *testing.T) {
	tarOf := func(name string, data []byte) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
		tw.Close()
		return b.Bytes()
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarOf("etc/x", []byte("xxCANARYzzxx")))
	zw.Close()
	outer := tarOf("blobs/sha256/abc", gz.Bytes())
	var where []string
	scanBytes(t, "outer", outer, func(w string, data []byte) {
		if bytes.Contains(data, []byte("CANARYzz")) {
			where = append(where, w)
		}
	}, 0)
	if len(where) == 0 || !strings.HasSuffix(where[len(where)-1], ": etc/x") {
		t.Fatalf("canary found at %q", where)
	}
}

// TestExplainRedactsValues builds testdata/builds/explain-secret twice in
// each progress mode that shows cache-miss reasons, with two values of the
// build arg DB_PASSWORD, and checks that the second build's reasons name
// the arg and tell the values apart by two different short hashes, while
// neither value appears anywhere in the output.
func TestExplainRedactsValues(t *testing.T) {
	f := newFixture(t)
	for _, mode := range []progress.Mode{progress.Plain, progress.JSON, ""} {
		name := string(mode)
		if name == "" {
			name = "auto-without-tty"
		}
		t.Run(name, func(t *testing.T) {
			first, second := "hunter2-first-"+name, "hunter2-second-"+name
			dir := copyCase(t, "builds/explain-secret")
			var out string
			for _, pw := range []string{first, second} {
				var log bytes.Buffer
				f.mustBuild(dir, func(o *Options) {
					if mode == "" {
						o.Progress = progress.New(&log, progress.Plain)
					} else {
						o.Progress = progress.New(&log, mode)
					}
					o.ExplainCache = true
					o.BuildArgs["DB_PASSWORD"] = pw
				})
				out = log.String()
				for _, v := range []string{first, second, "hunter2"} {
					if strings.Contains(out, v) {
						t.Errorf("progress output holds %q:\n%s", v, out)
					}
				}
			}
			for _, re := range []string{
				`build arg DB_PASSWORD changed: value ([0-9a-f]{12}), was value ([0-9a-f]{12})`,
				`instruction arguments changed \(a variable's value\): argument 1 is value ([0-9a-f]{12}), was value ([0-9a-f]{12})`,
			} {
				m := regexp.MustCompile(re).FindStringSubmatch(out)
				if m == nil {
					t.Errorf("output lacks %s:\n%s", re, out)
				} else if m[1] == m[2] {
					t.Errorf("two values have one hash: %s", m[0])
				}
			}
		})
	}
}

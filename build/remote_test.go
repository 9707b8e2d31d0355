package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fileServer serves named files with a fixed Last-Modified and counts the
// requests per path.
type fileServer struct {
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
	mtime time.Time
}

func newFileServer(t *testing.T, files map[string][]byte) (*fileServer, string) {
	s := &fileServer{files: files, hits: map[string]int{}, mtime: time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.hits[r.URL.Path]++
		dt, ok := s.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Last-Modified", s.mtime.Format(http.TimeFormat))
		w.Write(dt)
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *fileServer) set(p string, dt []byte) {
	s.mu.Lock()
	s.files[p] = dt
	s.mu.Unlock()
}

func (s *fileServer) count(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[p]
}

func gzipTar(t *testing.T) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "inside.txt", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	tw.Write([]byte("x\n"))
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestAddURL(t *testing.T) {
	f := newFixture(t)
	hello := []byte("hello from http\n")
	checked := []byte("checked content\n")
	sum := sha256.Sum256(checked)
	srv, url := newFileServer(t, map[string][]byte{
		"/hello.txt": hello, "/checked.txt": checked, "/archive.tar.gz": gzipTar(t),
	})
	dir := copyCase(t, "builds/remote")
	args := func(o *Options) {
		o.BuildArgs["URL"] = url
		o.BuildArgs["SUM"] = "sha256:" + hex.EncodeToString(sum[:])
	}
	res, _ := f.mustBuild(dir, args)
	u := unpack(t, res.Image)
	for _, tc := range []struct {
		path, want string
		mode       os.FileMode
		uid        uint32
	}{
		{"downloads/hello.txt", string(hello), 0o600, 0},
		{"downloads/renamed.txt", string(hello), 0o600, 0},
		{"checked", string(checked), 0o600, 0},
		{"arch/archive.tar.gz", string(gzipTar(t)), 0o600, 0},
		{"owned", string(hello), 0o644, 1000},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := readFile(t, u.rootfs, tc.path); got != tc.want {
				t.Errorf("/%s = %q, want %q", tc.path, got, tc.want)
			}
			st, err := os.Stat(filepath.Join(u.rootfs, tc.path))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tc.mode || st.Sys().(*syscall.Stat_t).Uid != tc.uid {
				t.Errorf("/%s: mode %v uid %d, want %v %d", tc.path, st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Uid, tc.mode, tc.uid)
			}
			if !st.ModTime().Equal(srv.mtime) {
				t.Errorf("/%s: mtime %v, want Last-Modified %v", tc.path, st.ModTime(), srv.mtime)
			}
		})
	}

	// Same content again: every step cached, and the --checksum URL is
	// not even fetched.
	n := srv.count("/checked.txt")
	again, log := f.mustBuild(dir, args)
	if again.Cached != again.Steps || again.ManifestDigest != res.ManifestDigest {
		t.Errorf("rebuild: %d of %d cached:\n%s", again.Cached, again.Steps, log)
	}
	if srv.count("/checked.txt") != n {
		t.Errorf("the --checksum URL was downloaded again")
	}
	// Changed content runs the steps that download it.
	srv.set("/hello.txt", []byte("changed\n"))
	res, _ = f.mustBuild(dir, args)
	if got := readFile(t, unpack(t, res.Image).rootfs, "downloads/renamed.txt"); got != "changed\n" {
		t.Errorf("after a change: %q", got)
	}
}

func TestAddURLErrors(t *testing.T) {
	f := newFixture(t)
	_, url := newFileServer(t, map[string][]byte{"/f.txt": []byte("data\n")})
	for _, tc := range []struct {
		name, line, want string
	}{
		{"404", "ADD " + url + "/missing.txt /x", `^Dockerfile:3: .*` + regexp.QuoteMeta(url+"/missing.txt") + `.*404`},
		{"bad-checksum", "ADD --checksum=sha256:" + hex.EncodeToString(make([]byte, 32)) + " " + url + "/f.txt /x", `digest mismatch`},
		{"copy-url", "COPY " + url + "/f.txt /x", `can't be a URL for COPY`},
		{"checksum-local", "ADD --checksum=sha256:" + hex.EncodeToString(make([]byte, 32)) + " f.txt /x", `checksum`},
	} {
		t.Run(tc.name, func(t *testing.T) { f.failLine(t, tc.line, tc.want) })
	}
	// Nothing is left in the store's tmp directory.
	if ents, _ := os.ReadDir(filepath.Join(f.root, "tmp")); len(ents) > 0 {
		t.Errorf("left in tmp: %v", ents)
	}
}

// failLine builds "FROM $BASE" and line (Dockerfile line 3) on a context
// holding f.txt, and checks that the build fails with an error matching
// the regular expression want.
func (f *fixture) failLine(t *testing.T, line, want string) {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "context"), 0o755)
	os.WriteFile(filepath.Join(dir, "context", "f.txt"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("ARG BASE\nFROM $BASE\n"+line+"\n"), 0o644)
	_, log, err := f.build(dir)
	if err == nil {
		t.Fatalf("build succeeded:\n%s", log)
	}
	if !regexp.MustCompile(want).MatchString(err.Error()) {
		t.Errorf("error %q does not match %q", err, want)
	}
}

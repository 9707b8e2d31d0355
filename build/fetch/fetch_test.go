package fetch

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSources(t *testing.T) {
	for _, tc := range []struct {
		src       string
		http, git bool
		name      string
	}{
		{"http://h/a/b.txt", true, false, "b.txt"},
		{"https://h/a/b.txt?x=1", true, false, "b.txt"},
		{"https://h/", true, false, "__unnamed__"},
		{"https://h", true, false, "__unnamed__"},
		{"https://h/repo.git", true, true, "repo.git"},
		{"git@h:repo", false, true, "repo"},
		{"git://h/repo", false, true, "repo"},
		{"ssh://h/repo", false, true, "repo"},
		{"local/file", false, false, "file"},
	} {
		if got := IsHTTP(tc.src); got != tc.http {
			t.Errorf("IsHTTP(%q) = %v", tc.src, got)
		}
		if tc.http {
			if got := FileName(tc.src); got != tc.name {
				t.Errorf("FileName(%q) = %q, want %q", tc.src, got, tc.name)
			}
		}
	}
}

func TestParseChecksum(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in   string
		algo string
		err  bool
	}{
		{"sha256:" + hex64, "sha256", false},
		{"sha384:" + strings.Repeat("ab", 48), "sha384", false},
		{"sha512:" + strings.Repeat("ab", 64), "sha512", false},
		{"sha256:" + strings.ToUpper(hex64), "", true},
		{"sha256:" + hex64[:62], "", true},
		{"sha256:" + hex64[:62] + "zz", "", true},
		{"md5:" + hex64, "", true},
		{hex64, "", true},
	} {
		algo, _, err := ParseChecksum(tc.in)
		if (err != nil) != tc.err || algo != tc.algo {
			t.Errorf("ParseChecksum(%q) = %q, %v; want %q, error %v", tc.in, algo, err, tc.algo, tc.err)
		}
	}
}

func TestDownload(t *testing.T) {
	body := []byte("downloaded content\n")
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/file":
			w.Header().Set("Last-Modified", mtime.Format(http.TimeFormat))
		case "/nodate":
		default:
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	s256 := sha256.Sum256(body)
	s512 := sha512.Sum512(body)
	sum256, sum512 := "sha256:"+hex.EncodeToString(s256[:]), "sha512:"+hex.EncodeToString(s512[:])
	for _, tc := range []struct {
		name, path, checksum string
		want                 Result
		err                  string
	}{
		{"no checksum", "/file", "", Result{Digest: sum256, LastModified: mtime.Format(http.TimeFormat)}, ""},
		{"sha512", "/file", sum512, Result{Digest: sum512, LastModified: mtime.Format(http.TimeFormat)}, ""},
		{"no Last-Modified", "/nodate", "", Result{Digest: sum256}, ""},
		{"mismatch", "/file", "sha256:" + strings.Repeat("0", 64), Result{}, "digest mismatch"},
		{"not found", "/none", "", Result{}, "404"},
		{"bad checksum", "/file", "sha1:00", Result{}, "invalid checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "out")
			res, err := Download(context.Background(), srv.Client(), srv.URL+tc.path, p, tc.checksum)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), srv.URL+tc.path) {
					t.Fatalf("error %v, want one naming the URL and %q", err, tc.err)
				}
				if _, serr := os.Lstat(p); !os.IsNotExist(serr) {
					t.Errorf("failed download left %s", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res != tc.want {
				t.Errorf("Download = %+v, want %+v", res, tc.want)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != 0o600 {
				t.Errorf("mode %v, want 0600", fi.Mode())
			}
			if tc.want.LastModified != "" && !fi.ModTime().Equal(mtime) {
				t.Errorf("mtime %v, want %v", fi.ModTime(), mtime)
			}
			if dt, _ := os.ReadFile(p); string(dt) != string(body) {
				t.Errorf("content %q", dt)
			}
		})
	}
}

package build

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"builder/build/fetch"
)

// TestSecurityHostileFS builds FROM an image holding symlinks out of the
// root (/toroot -> /, /parent -> the host directory above a canary
// directory) a Dockerfile whose WORKDIR, COPY destinations and RUN go
// through them, on both snapshotters. Everything lands inside the image,
// the host canary directory stays as it was, and no layer holds a whiteout
// named after a host file (the naive snapshotter's diff followed the old
// /parent link and listed the host directory; that fails on the old code).
func TestSecurityHostileFS(t *testing.T) {
	for _, sn := range []string{"overlay", "naive"} {
		t.Run(sn, func(t *testing.T) {
			f := newFixtureWith(t, sn)
			dir, check := canaryDir(t)
			ref := hostileImage(t, func(tw *tar.Writer) {
				tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "toroot", Linkname: "/", Mode: 0o777})
				tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "parent", Linkname: filepath.Dir(dir), Mode: 0o777})
			})
			res, log, err := f.build(copyCase(t, "builds/security-hostile-fs"), func(o *Options) {
				o.BuildArgs["BASE"] = ref
				o.BuildArgs["NAME"] = filepath.Base(dir)
				o.BuildArgs["CANARY"] = dir
			})
			check()
			if err != nil {
				t.Fatalf("build: %v\n%s", err, log)
			}
			layers, err := res.Image.Layers()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, l := range layers {
				rc, err := l.Uncompressed()
				if err != nil {
					t.Fatal(err)
				}
				tr := tar.NewReader(rc)
				for {
					h, err := tr.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					names = append(names, strings.TrimSuffix(h.Name, "/"))
				}
				rc.Close()
			}
			inRoot := strings.TrimPrefix(dir, "/")
			for _, want := range []string{inRoot + "/wd", inRoot + "/copied", inRoot + "/copied2", "parent/" + filepath.Base(dir) + "/mine"} {
				found := false
				for _, n := range names {
					found = found || n == want
				}
				if !found {
					t.Errorf("image lacks %s", want)
				}
			}
			for _, n := range names {
				if path.Base(n) == ".wh.canary" {
					t.Errorf("a layer holds %s, a whiteout named after the host's file", n)
				}
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dir), "copied2")); err == nil {
				t.Error("COPY wrote next to the canary directory on the host")
			}
		})
	}
}

// TestInlineFileNames checks that the file name an ADD URL or a COPY
// heredoc gives its source can only name a file in that source's own
// directory: names that are empty, "." or "..", or hold a "/", are refused
// before anything is written.
func TestInlineFileNames(t *testing.T) {
	tests := []struct {
		url, name string
		ok        bool
	}{
		{url: "https://example.invalid/a/file.tgz", ok: true},
		{url: "https://example.invalid/a/..", ok: false},
		{url: "https://example.invalid/a%2F..%2F..", ok: false},
		{url: "https://example.invalid/", ok: true}, // "__unnamed__"
		{name: "../x", ok: false},
		{name: "a/b", ok: false},
		{name: ".", ok: false},
		{name: "", ok: false},
		{name: "[x]*", ok: true},
	}
	for _, tc := range tests {
		dir := t.TempDir()
		name := tc.name
		if tc.url != "" {
			name = fetch.FileName(tc.url)
		}
		s := &inlineSet{dir: dir, files: []*inlineFile{{name: name}}}
		p, err := s.filePath(0)
		if (err == nil) != tc.ok {
			t.Errorf("%q (%q): filePath = %q, %v; want ok %v", tc.url+tc.name, name, p, err, tc.ok)
			continue
		}
		if err == nil && filepath.Dir(p) != filepath.Join(dir, "0") {
			t.Errorf("%q: file path %s is not in its own directory", name, p)
		}
	}
}

// TestSecurityCopyFromHostile copies from a stage whose base image holds
// symlinks out of the root, naming the host's canary file through them or
// with "..": each source resolves inside the stage, where it does not
// exist, so the build fails and nothing of the host reaches the image.
func TestSecurityCopyFromHostile(t *testing.T) {
	f := newFixture(t)
	dir, check := canaryDir(t)
	ref := hostileImage(t, func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "toroot", Linkname: "/", Mode: 0o777})
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "parent", Linkname: filepath.Dir(dir), Mode: 0o777})
	})
	for _, src := range []string{
		"/parent/" + filepath.Base(dir) + "/canary",
		"/parent/" + filepath.Base(dir) + "/",
		"/toroot" + dir + "/canary",
		strings.Repeat("/..", 8) + dir + "/canary",
	} {
		t.Run(src, func(t *testing.T) {
			_, log, err := f.build(copyCase(t, "builds/security-copy-from-hostile"), func(o *Options) {
				o.BuildArgs["BASE"] = ref
				o.BuildArgs["SRC"] = src
			})
			if err == nil {
				t.Fatalf("COPY --from=src %s succeeded:\n%s", src, log)
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), "not found") && !strings.Contains(err.Error(), "escapes") {
				t.Errorf("COPY --from=src %s: %v, want not found or escapes", src, err)
			}
			check()
		})
	}
}

// TestSecurityDockerfileSymlink builds a case whose Dockerfile is a
// symlink to a host file that is itself a valid Dockerfile: it is resolved
// inside its own directory, as BuildKit does, so the build fails with
// "not found" instead of building (and printing) the host file.
func TestSecurityDockerfileSymlink(t *testing.T) {
	f := newFixture(t)
	host := filepath.Join(t.TempDir(), "Dockerfile")
	if err := os.WriteFile(host, []byte("FROM scratch\nLABEL secret=host-file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "context"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(dir, "Dockerfile")); err != nil {
		t.Fatal(err)
	}
	res, log, err := f.build(dir)
	if err == nil {
		cfg, _ := res.Image.ConfigFile()
		t.Fatalf("the build read the host file: labels %v\n%s", cfg.Config.Labels, log)
	}
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "resolves to") {
		t.Errorf("error = %v, want not found, naming where the link resolves", err)
	}
}

package copier

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newTree makes a directory holding files (path → content) and returns it.
func newTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestChecksum checks that the checksum follows what COPY would write:
// content, modes, the set of files, links, xattrs and the request change
// it; mtimes, unrelated or ignored files and context ownership do not.
func TestChecksum(t *testing.T) {
	needRoot(t)
	base := map[string]string{
		".dockerignore": "**/*.log\n",
		"a.txt":         "alpha",
		"dir/b.txt":     "bravo",
		"dir/c.sh":      "#!/bin/sh",
		"other.txt":     "unrelated",
		"ignored.log":   "log",
	}
	req := Request{Sources: []string{"a.txt", "dir"}, Dest: "/dst/"}
	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		req     func(r *Request)
		changes bool
	}{
		{name: "nothing", mutate: func(*testing.T, string) {}},
		{name: "content", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, "dir/b.txt"), []byte("brav0"), 0o644))
		}},
		{name: "mode", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.Chmod(filepath.Join(d, "dir/c.sh"), 0o755))
		}},
		{name: "directory mode", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.MkdirAll(filepath.Join(d, "dir/sub"), 0o755))
			must(t, os.Chmod(filepath.Join(d, "dir/sub"), 0o700))
		}},
		{name: "added file", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, "dir/new.txt"), nil, 0o644))
		}},
		{name: "removed file", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.Remove(filepath.Join(d, "dir/b.txt")))
		}},
		{name: "renamed file", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.Rename(filepath.Join(d, "dir/b.txt"), filepath.Join(d, "dir/b2.txt")))
		}},
		{name: "empty directory", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.Mkdir(filepath.Join(d, "dir/empty"), 0o755))
		}},
		{name: "symlink", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.Symlink("b.txt", filepath.Join(d, "dir/link")))
		}},
		{name: "hard link instead of a copy", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.Link(filepath.Join(d, "dir/b.txt"), filepath.Join(d, "dir/b-link")))
		}},
		{name: "xattr", changes: true, mutate: func(t *testing.T, d string) {
			must(t, unix.Setxattr(filepath.Join(d, "a.txt"), "user.test", []byte("v"), 0))
		}},
		{name: "unrelated file", mutate: func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, "other.txt"), []byte("changed"), 0o644))
			must(t, os.WriteFile(filepath.Join(d, "new-unrelated.txt"), nil, 0o644))
		}},
		{name: "ignored file", mutate: func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, "dir/new.log"), []byte("x"), 0o644))
			must(t, os.WriteFile(filepath.Join(d, "ignored.log"), []byte("changed"), 0o644))
		}},
		{name: "unrelated ignore pattern", mutate: func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, ".dockerignore"), []byte("**/*.log\nnot-there/\n"), 0o644))
		}},
		{name: "ignore pattern that hides a copied file", changes: true, mutate: func(t *testing.T, d string) {
			must(t, os.WriteFile(filepath.Join(d, ".dockerignore"), []byte("**/*.log\ndir/b.txt\n"), 0o644))
		}},
		{name: "mtimes", mutate: func(t *testing.T, d string) {
			old := time.Unix(1e9, 0)
			for _, p := range []string{"a.txt", "dir", "dir/b.txt"} {
				must(t, os.Chtimes(filepath.Join(d, p), old, old))
			}
		}},
		{name: "context ownership", mutate: func(t *testing.T, d string) {
			must(t, os.Lchown(filepath.Join(d, "dir/b.txt"), 1234, 1234))
		}},
		{name: "chmod flag", changes: true, req: func(r *Request) { r.Chmod = "700" }},
		{name: "chown flag", changes: true, req: func(r *Request) { r.Chown = &Owner{UID: 1, GID: 1} }},
		{name: "destination", changes: true, req: func(r *Request) { r.Dest = "/elsewhere/" }},
		{name: "exclude flag", changes: true, req: func(r *Request) { r.Excludes = []string{"*.sh"} }},
	}
	sum := func(t *testing.T, dir string, r Request) string {
		t.Helper()
		bctx, err := LoadContext(dir, "")
		must(t, err)
		s, err := Checksum(context.Background(), bctx.Source(), r)
		must(t, err)
		return s
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := newTree(t, base)
			before := sum(t, dir, req)
			if again := sum(t, dir, req); again != before {
				t.Fatalf("checksum not stable: %s then %s", before, again)
			}
			r := req
			if tc.req != nil {
				tc.req(&r)
			}
			if tc.mutate != nil {
				tc.mutate(t, dir)
			}
			after := sum(t, dir, r)
			if changed := after != before; changed != tc.changes {
				t.Errorf("checksum changed = %v, want %v (%s → %s)", changed, tc.changes, before, after)
			}
		})
	}
}

// TestChecksumStageOwnership checks that ownership counts for stage
// sources, whose owners Copy keeps.
func TestChecksumStageOwnership(t *testing.T) {
	needRoot(t)
	dir := newTree(t, map[string]string{"f": "x"})
	req := Request{Sources: []string{"/f"}, Dest: "/f"}
	src := Source{Root: dir}
	before, err := Checksum(context.Background(), src, req)
	must(t, err)
	must(t, os.Lchown(filepath.Join(dir, "f"), 5, 6))
	after, err := Checksum(context.Background(), src, req)
	must(t, err)
	if before == after {
		t.Error("checksum ignores the owner of a stage file")
	}
	req.Chown = &Owner{UID: 1, GID: 1}
	withChown, err := Checksum(context.Background(), src, req)
	must(t, err)
	must(t, os.Lchown(filepath.Join(dir, "f"), 7, 7))
	withChown2, err := Checksum(context.Background(), src, req)
	must(t, err)
	if withChown != withChown2 {
		t.Error("with --chown, the source owner still changes the checksum")
	}
}

// TestCopyKeepsTimesAndXattrs checks that file and directory mtimes of the
// context and extended attributes reach the destination.
func TestCopyKeepsTimesAndXattrs(t *testing.T) {
	needRoot(t)
	ctxDir := newTree(t, map[string]string{"tree/f.txt": "f", "tree/sub/g.txt": "g", "single.txt": "s"})
	fileTime := time.Unix(1_000_000_000, 123456789)
	dirTime := time.Unix(1_100_000_000, 0)
	must(t, unix.Setxattr(filepath.Join(ctxDir, "tree/f.txt"), "user.origin", []byte("ctx"), 0))
	for _, p := range []string{"tree/f.txt", "tree/sub/g.txt", "single.txt"} {
		must(t, os.Chtimes(filepath.Join(ctxDir, p), fileTime, fileTime))
	}
	for _, p := range []string{"tree/sub", "tree"} {
		must(t, os.Chtimes(filepath.Join(ctxDir, p), dirTime, dirTime))
	}
	dst := t.TempDir()
	src := Source{Root: ctxDir, IsContext: true}
	must(t, Copy(context.Background(), src, dst, Request{Sources: []string{"tree"}, Dest: "/out"}))
	must(t, Copy(context.Background(), src, dst, Request{Sources: []string{"single.txt"}, Dest: "/s.txt"}))
	want := map[string]time.Time{
		"out":           dirTime, // the destination of a directory gets its times
		"out/sub":       dirTime,
		"out/f.txt":     fileTime,
		"out/sub/g.txt": fileTime,
		"s.txt":         fileTime,
	}
	for p, tm := range want {
		fi, err := os.Lstat(filepath.Join(dst, p))
		must(t, err)
		if !fi.ModTime().Equal(tm) {
			t.Errorf("mtime of %s = %v, want %v", p, fi.ModTime(), tm)
		}
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(filepath.Join(dst, "out/f.txt"), "user.origin", buf)
	must(t, err)
	if string(buf[:n]) != "ctx" {
		t.Errorf("xattr user.origin = %q, want %q", buf[:n], "ctx")
	}
}

// TestSpecialFiles checks that fifos and device nodes inside a copied
// directory are recreated, not read.
func TestSpecialFiles(t *testing.T) {
	needRoot(t)
	dir := newTree(t, map[string]string{"dev/readme": "r"})
	must(t, unix.Mkfifo(filepath.Join(dir, "dev/fifo"), 0o640))
	must(t, unix.Mknod(filepath.Join(dir, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Chmod(filepath.Join(dir, "dev/null"), 0o666))
	dst := t.TempDir()
	must(t, Copy(context.Background(), Source{Root: dir}, dst, Request{Sources: []string{"dev"}, Dest: "/dev"}))
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dst, "dev/fifo"), &st))
	if st.Mode != unix.S_IFIFO|0o640 {
		t.Errorf("fifo mode = %o", st.Mode)
	}
	must(t, unix.Lstat(filepath.Join(dst, "dev/null"), &st))
	if st.Mode != unix.S_IFCHR|0o666 || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("device mode = %o rdev = %d", st.Mode, st.Rdev)
	}
}

// TestCopyIdempotent checks that copying twice gives the same tree.
func TestCopyIdempotent(t *testing.T) {
	needRoot(t)
	dir := newTree(t, map[string]string{"t/a": "a", "t/b/c": "c"})
	must(t, os.Symlink("a", filepath.Join(dir, "t/l")))
	dst := t.TempDir()
	req := Request{Sources: []string{"t"}, Dest: "/x/"}
	src := Source{Root: dir, IsContext: true}
	must(t, Copy(context.Background(), src, dst, req))
	first, err := listTree(dst)
	must(t, err)
	must(t, Copy(context.Background(), src, dst, req))
	second, err := listTree(dst)
	must(t, err)
	if first != second {
		t.Errorf("second copy changed the tree\n--- first\n%s--- second\n%s", first, second)
	}
}

// TestCopyCancelled checks that a cancelled context stops the copy.
func TestCopyCancelled(t *testing.T) {
	dir := newTree(t, map[string]string{"a": "a", "d/b": "b"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Copy(ctx, Source{Root: dir}, t.TempDir(), Request{Sources: []string{"a", "d"}, Dest: "/x/"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
	_, err = Checksum(ctx, Source{Root: dir}, Request{Sources: []string{"d"}, Dest: "/x/"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Checksum error = %v, want context.Canceled", err)
	}
}

// TestNotFound checks the error type of a missing source.
func TestNotFound(t *testing.T) {
	dir := newTree(t, map[string]string{"a": "a"})
	_, err := Checksum(context.Background(), Source{Root: dir, IsContext: true}, Request{Sources: []string{"nope"}, Dest: "/"})
	var nf *NotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, fs.ErrNotExist) || nf.Source != "nope" {
		t.Errorf("error = %v, want a NotFoundError for nope", err)
	}
}

// TestADDNeedsExtractor checks that an archive without an extractor fails
// instead of being copied.
func TestADDNeedsExtractor(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("testdata/add-archives/context/gz.tgz")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "a.tgz"), data, 0o644))
	err = Copy(context.Background(), Source{Root: dir}, t.TempDir(), Request{Sources: []string{"a.tgz"}, Dest: "/", Add: true})
	if err == nil || !strings.Contains(err.Error(), "needs an extractor") {
		t.Errorf("error = %v", err)
	}
}

func TestParseChmod(t *testing.T) {
	tests := []struct {
		in        string
		mode      uint32
		isDir     bool
		want      uint32
		wantError bool
	}{
		{in: "", mode: 0o640, want: 0o640},
		{in: "755", mode: 0o600, want: 0o755},
		{in: "0644", mode: 0o777, want: 0o644},
		{in: "4755", mode: 0o600, want: 0o4755},
		{in: "u+x", mode: 0o644, want: 0o744},
		{in: "u+x,g-w", mode: 0o664, want: 0o744},
		{in: "+x", mode: 0o644, want: 0o755},
		{in: "a-w", mode: 0o666, want: 0o444},
		{in: "a+X", mode: 0o644, want: 0o644},
		{in: "a+X", mode: 0o644, isDir: true, want: 0o755},
		{in: "a+X", mode: 0o744, want: 0o755},
		{in: "go=u", mode: 0o640, want: 0o666},
		{in: "u=rwx,go=", mode: 0o777, want: 0o700},
		{in: "o=r", mode: 0o1777, want: 0o774},
		{in: "u+s,g+s", mode: 0o755, want: 0o6755},
		{in: "+t", mode: 0o755, want: 0o1755},
		{in: "u+rw-x", mode: 0o144, want: 0o644},
		{in: "64a", wantError: true},
		{in: "10000", wantError: true},
		{in: "u*x", wantError: true},
		{in: "ug", wantError: true},
		{in: "z+x", wantError: true},
	}
	for _, tc := range tests {
		c, err := parseChmod(tc.in)
		if tc.wantError {
			if err == nil {
				t.Errorf("parseChmod(%q) succeeded", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseChmod(%q): %v", tc.in, err)
			continue
		}
		if got := c.apply(tc.mode, tc.isDir); got != tc.want {
			t.Errorf("chmod %q on %04o (dir %v) = %04o, want %04o", tc.in, tc.mode, tc.isDir, got, tc.want)
		}
	}
}

func TestResolveOwner(t *testing.T) {
	root := newTree(t, map[string]string{
		"etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
		"etc/group":  "root:x:0:\napp:x:1001:\nstaff:x:50:\n",
	})
	empty := t.TempDir()
	tests := []struct {
		root, in string
		want     *Owner
		err      string
	}{
		{root: root, in: ""},
		{root: root, in: "app", want: &Owner{1000, 1001}},
		{root: root, in: "app:staff", want: &Owner{1000, 50}},
		{root: root, in: "1000", want: &Owner{1000, 1000}},
		{root: root, in: "1000:", want: &Owner{1000, 1000}},
		{root: root, in: "5:app", want: &Owner{5, 1001}},
		{root: empty, in: "root", want: &Owner{0, 0}},
		{root: empty, in: "12:34", want: &Owner{12, 34}},
		{root: empty, in: "app", err: "no such user: app"},
		{root: root, in: "app:nogroup", err: "no such group: nogroup"},
		{root: root, in: ":5", err: "empty user"},
		{root: root, in: "-1", err: "no such user"},
	}
	for _, tc := range tests {
		got, err := ResolveOwner(tc.root, tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ResolveOwner(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ResolveOwner(%q): %v", tc.in, err)
			continue
		}
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("ResolveOwner(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestResolveOwnerRefusesNonRegular checks that a directory or fifo as
// /etc/passwd is refused rather than read.
func TestResolveOwnerRefusesNonRegular(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc/passwd"), 0o755))
	if _, err := ResolveOwner(root, "app"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory /etc/passwd: error = %v", err)
	}
	root2 := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root2, "etc"), 0o755))
	must(t, unix.Mkfifo(filepath.Join(root2, "etc/passwd"), 0o644))
	if _, err := ResolveOwner(root2, "app"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("fifo /etc/passwd: error = %v", err)
	}
}

func TestLoadContext(t *testing.T) {
	outside := newTree(t, map[string]string{"ignore": "*.go\n"})
	tests := []struct {
		name       string
		files      map[string]string
		dockerfile string // relative to the context, "" for none
		link       string // make .dockerignore a symlink to this
		dfLink     string // make <dockerfile>.dockerignore a symlink to this
		ignored    []string
		kept       []string
	}{
		{name: "none", files: map[string]string{"a.go": ""}, kept: []string{"a.go"}},
		{name: "context file", files: map[string]string{".dockerignore": "*.go\n"}, ignored: []string{"a.go"}, kept: []string{"b.txt"}},
		{
			name:       "dockerfile-specific wins",
			files:      map[string]string{".dockerignore": "*.go\n", "sub/app.Dockerfile": "", "sub/app.Dockerfile.dockerignore": "*.txt\n"},
			dockerfile: "sub/app.Dockerfile",
			ignored:    []string{"b.txt"}, kept: []string{"a.go"},
		},
		{
			name:       "falls back to the context file",
			files:      map[string]string{".dockerignore": "*.go\n", "Dockerfile": ""},
			dockerfile: "Dockerfile",
			ignored:    []string{"a.go"}, kept: []string{"b.txt"},
		},
		{
			name:    "symlink out of the context is not followed out",
			files:   map[string]string{},
			link:    outside + "/ignore",
			kept:    []string{"a.go"},
			ignored: nil,
		},
		{
			name:       "dockerfile-specific symlink out of its directory is not followed out",
			files:      map[string]string{"Dockerfile": ""},
			dockerfile: "Dockerfile",
			dfLink:     outside + "/ignore",
			kept:       []string{"a.go"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := newTree(t, tc.files)
			if tc.link != "" {
				must(t, os.Symlink(tc.link, filepath.Join(dir, ".dockerignore")))
			}
			if tc.dfLink != "" {
				must(t, os.Symlink(tc.dfLink, filepath.Join(dir, tc.dockerfile+".dockerignore")))
			}
			df := ""
			if tc.dockerfile != "" {
				df = filepath.Join(dir, tc.dockerfile)
			}
			c, err := LoadContext(dir, df)
			must(t, err)
			for _, p := range tc.ignored {
				if c.Ignore == nil {
					t.Fatalf("no ignore patterns, want %s ignored", p)
				}
				if m, _ := c.Ignore.MatchesOrParentMatches(p); !m {
					t.Errorf("%s not ignored", p)
				}
			}
			for _, p := range tc.kept {
				if c.Ignore == nil {
					continue
				}
				if m, _ := c.Ignore.MatchesOrParentMatches(p); m {
					t.Errorf("%s ignored", p)
				}
			}
		})
	}
}

// TestReadDockerfile reads Dockerfiles that are symlinks: one inside the
// Dockerfile's directory is followed, one that leaves it (to a host file,
// /dev/zero or a climbing path) is not found, and a FIFO or a directory is
// refused without blocking.
func TestReadDockerfile(t *testing.T) {
	outside := newTree(t, map[string]string{"Dockerfile": "FROM host-secret\n"})
	dir := newTree(t, map[string]string{"Dockerfile": "FROM a\n", "sub/real": "FROM b\n"})
	for name, target := range map[string]string{
		"inner": "sub/real",
		"abs":   outside + "/Dockerfile",
		"zero":  "/dev/zero",
		"climb": "../../../../../../.." + outside + "/Dockerfile",
	} {
		must(t, os.Symlink(target, filepath.Join(dir, name)))
	}
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	tests := []struct {
		name, want, wantErr string
		notExist            bool
	}{
		{name: "Dockerfile", want: "FROM a\n"},
		{name: "inner", want: "FROM b\n"},
		{name: "abs", wantErr: "resolves to", notExist: true},
		{name: "zero", wantErr: `resolves to "/dev/zero"`, notExist: true},
		{name: "climb", wantErr: "resolves to", notExist: true},
		{name: "missing", wantErr: "no such file", notExist: true},
		{name: "fifo", wantErr: "not a regular file"},
		{name: "sub", wantErr: "not a regular file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadDockerfile(filepath.Join(dir, tc.name))
			if tc.wantErr == "" {
				if err != nil || string(got) != tc.want {
					t.Fatalf("ReadDockerfile = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ReadDockerfile = %q, %v; want an error with %q", got, err, tc.wantErr)
			}
			if errors.Is(err, fs.ErrNotExist) != tc.notExist {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v", err, !tc.notExist)
			}
		})
	}
}

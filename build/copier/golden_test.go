package copier

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"golang.org/x/sys/unix"

	"builder/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the expected listings of testdata cases")

// TestGolden runs every testdata/<case>: the COPY and ADD lines of its
// Dockerfile against a copy of its context/ (the build context, with its
// .dockerignore and the Dockerfile's), stage/ (the --from=stage root) and
// dst/ (the destination root). The file "setup" makes what git cannot
// keep; "expected" is the listing of dst/ afterwards, or "error" holds a
// substring of the error the last line must fail with.
func TestGolden(t *testing.T) {
	needRoot(t)
	cases, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		t.Run(c.Name(), func(t *testing.T) {
			runCase(t, filepath.Join("testdata", c.Name()))
		})
	}
	checkNoMounts(t)
}

func needRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t) // chown, mknod
}

// checkNoMounts fails when a test left a mount below the temp directory.
func checkNoMounts(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), os.TempDir()+"/Test") {
		t.Errorf("a mount below %s is left:\n%s", os.TempDir(), data)
	}
}

func runCase(t *testing.T, dir string) {
	work := prepareCase(t, dir)
	dockerfile := filepath.Join(work, "Dockerfile")
	_, hostCanaryErr := os.Lstat("/tmp/canary-dir")
	runErr := runDockerfile(t, work, dockerfile)
	checkCanaries(t, work, hostCanaryErr)

	wantErr, err := os.ReadFile(filepath.Join(dir, "error"))
	if err == nil {
		want := strings.TrimSpace(string(wantErr))
		if runErr == nil || !strings.Contains(runErr.Error(), want) {
			t.Fatalf("error = %v, want one containing %q", runErr, want)
		}
		return
	}
	if runErr != nil {
		t.Fatal(runErr)
	}
	got, err := listTree(filepath.Join(work, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	expected := filepath.Join(dir, "expected")
	if *update {
		if err := os.WriteFile(expected, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(expected)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("listing of dst differs\n--- got\n%s--- want\n%s", got, want)
	}
}

// prepareCase copies the trees of the testdata case dir into a new
// directory, with the Dockerfile, and runs its setup file there.
func prepareCase(t *testing.T, dir string) string {
	t.Helper()
	work := t.TempDir()
	for _, tree := range []string{"context", "stage", "dst"} {
		if err := copyFixture(filepath.Join(dir, tree), filepath.Join(work, tree)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(work, "dst"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Dockerfile", "Dockerfile.dockerignore"} {
		if data, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			if err := os.WriteFile(filepath.Join(work, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := applySetup(filepath.Join(dir, "setup"), work); err != nil {
		t.Fatal(err)
	}
	return work
}

// checkCanaries fails when anything was written to work/canary-dir (next
// to the destination root) or to /tmp/canary-dir, the places that the
// hostile symlinks of the hostile-dst cases point at.
func checkCanaries(t *testing.T, work string, hostCanaryBefore error) {
	t.Helper()
	if entries, err := os.ReadDir(filepath.Join(work, "canary-dir")); err == nil && len(entries) > 0 {
		t.Errorf("a copy wrote outside the destination root: %s/canary-dir holds %v", work, entries)
	}
	if _, err := os.Lstat("/tmp/canary-dir"); hostCanaryBefore != nil && err == nil {
		t.Errorf("a copy created /tmp/canary-dir outside the destination root")
	}
}

// runDockerfile runs the COPY/ADD lines of the Dockerfile in work. A
// line whose Checksum fails must fail in Copy too (Copy can also fail for
// reasons in the destination, which Checksum does not see).
func runDockerfile(t *testing.T, work, dockerfile string) error {
	dst := filepath.Join(work, "dst")
	return forEachLine(t, work, dockerfile, func(line string, src Source, req Request) error {
		sum, sumErr := Checksum(context.Background(), src, req)
		copyErr := Copy(context.Background(), src, dst, req)
		if sumErr != nil && copyErr == nil {
			t.Fatalf("%s: Checksum failed (%v) but Copy did not", line, sumErr)
		}
		if copyErr != nil {
			return copyErr
		}
		if !strings.HasPrefix(sum, "sha256:") || len(sum) != 71 {
			t.Fatalf("%s: checksum %q", line, sum)
		}
		return nil
	})
}

// forEachLine calls fn with the request of every COPY/ADD line of the
// Dockerfile in work, in order, --chown resolved in work/dst; it stops at
// the first error.
func forEachLine(t *testing.T, work, dockerfile string, fn func(line string, src Source, req Request) error) error {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	bctx, err := LoadContext(filepath.Join(work, "context"), dockerfile)
	if err != nil {
		return err
	}
	dst := filepath.Join(work, "dst")
	for _, n := range res.AST.Children {
		cmd, err := instructions.ParseInstruction(n)
		if err != nil {
			t.Fatalf("parse %s: %v", n.Original, err)
		}
		var (
			sd                 instructions.SourcesAndDest
			from, chown, chmod string
			excludes           []string
			parents, add       bool
		)
		switch c := cmd.(type) {
		case *instructions.CopyCommand:
			sd, from, chown, chmod, excludes, parents = c.SourcesAndDest, c.From, c.Chown, c.Chmod, c.ExcludePatterns, c.Parents
		case *instructions.AddCommand:
			sd, chown, chmod, excludes, add = c.SourcesAndDest, c.Chown, c.Chmod, c.ExcludePatterns, true
		default:
			t.Fatalf("unsupported instruction %s", n.Original)
		}
		src := bctx.Source()
		if from == "stage" {
			src = Source{Root: filepath.Join(work, "stage")}
		}
		owner, err := ResolveOwner(dst, chown)
		if err != nil {
			return err
		}
		dest := sd.DestPath
		if !path.IsAbs(dest) {
			dest = "/" + dest
		}
		req := Request{Sources: sd.SourcePaths, Dest: dest, Chown: owner, Chmod: chmod, Excludes: excludes, Parents: parents, Add: add, Extract: extractTar}
		if err := fn(n.Original, src, req); err != nil {
			return err
		}
	}
	return nil
}

// copyFixture copies a committed fixture tree: directories get 0755,
// files 0755 when git kept an execute bit and 0644 otherwise. A missing
// tree is fine.
func copyFixture(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == from {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		target := filepath.Join(to, rel)
		if d.IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, 0o755)
		}
		if d.Name() == ".keep" {
			return nil // holds an otherwise empty fixture directory in git
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if info.Mode()&0o100 != 0 {
			mode = 0o755
		}
		if err := os.WriteFile(target, data, mode); err != nil {
			return err
		}
		return os.Chmod(target, mode)
	})
}

// applySetup runs the lines of a setup file in work:
//
//	symlink PATH TARGET    mkdir PATH      chmod PATH OCTAL
//	chown PATH UID:GID     hardlink PATH EXISTING    fifo PATH
//	write PATH TEXT        mtime PATH UNIX-SECONDS
//	xattr PATH NAME VALUE  size PATH BYTES (a file of that many bytes)
func applySetup(file, work string) error {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return fmt.Errorf("setup line %q", line)
		}
		p := filepath.Join(work, f[1])
		arg := ""
		if len(f) > 2 {
			arg = strings.Join(f[2:], " ")
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch f[0] {
		case "symlink":
			err = os.Symlink(arg, p)
		case "mkdir":
			err = os.Mkdir(p, 0o755)
		case "chmod":
			var m uint64
			if m, err = strconv.ParseUint(arg, 8, 32); err == nil {
				err = unix.Fchmodat(unix.AT_FDCWD, p, uint32(m), 0)
			}
		case "chown":
			u, g, _ := strings.Cut(arg, ":")
			uid, _ := strconv.Atoi(u)
			gid, _ := strconv.Atoi(g)
			err = os.Lchown(p, uid, gid)
		case "hardlink":
			err = os.Link(filepath.Join(work, arg), p)
		case "fifo":
			err = unix.Mkfifo(p, 0o644)
		case "write":
			err = os.WriteFile(p, []byte(arg), 0o644)
		case "xattr":
			k, v, _ := strings.Cut(arg, " ")
			err = unix.Lsetxattr(p, k, []byte(v), 0)
		case "size":
			var n int64
			if n, err = strconv.ParseInt(arg, 10, 64); err == nil {
				err = os.WriteFile(p, bytes.Repeat([]byte("0123456789abcdef"), int(n/16+1))[:n], 0o644)
			}
		case "mtime":
			var sec int64
			if sec, err = strconv.ParseInt(arg, 10, 64); err == nil {
				tm := time.Unix(sec, 0)
				ts := []unix.Timespec{unix.NsecToTimespec(tm.UnixNano()), unix.NsecToTimespec(tm.UnixNano())}
				err = unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
			}
		default:
			err = fmt.Errorf("unknown setup action %q", f[0])
		}
		if err != nil {
			return fmt.Errorf("setup %q: %w", line, err)
		}
	}
	return sc.Err()
}

// listTree lists every entry below dir, one per line:
// "/path mode uid:gid type [sha256:<12 hex>|-> target] [nlink=N]".
func listTree(dir string) (string, error) {
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fmt.Fprintf(&b, "/%s %04o %d:%d %s", rel, st.Mode&0o7777, st.Uid, st.Gid, fileType(st.Mode))
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			fmt.Fprintf(&b, " sha256:%x", sum[:6])
			if st.Nlink > 1 {
				fmt.Fprintf(&b, " nlink=%d", st.Nlink)
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " -> %s", target)
		}
		b.WriteString("\n")
		return nil
	})
	return b.String(), err
}

// extractTar is the Request.Extract the tests use: a small extractor that
// keeps every entry inside dstDir.
func extractTar(dstDir string, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		target, err := securejoin.SecureJoin(dstDir, hdr.Name)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unsupported entry %s", hdr.Name)
		}
		if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeSymlink {
			if err := os.Chmod(target, os.FileMode(hdr.Mode&0o777)); err != nil {
				return err
			}
		}
	}
}

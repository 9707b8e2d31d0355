// Package testsuite is the behaviour every snapshot.Snapshotter must show,
// run by the tests of each implementation. It needs root.
//
// It is one file (~550 lines) of test cases, so that the contract reads as
// one list.
package testsuite

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"builder/internal/testenv"
	"builder/snapshot"
	"builder/snapshot/archive"
	"builder/snapshot/internal/treetest"
)

// Times set on the base tree and on everything a change touches, so two
// implementations see identical trees.
var (
	t0 = unix.Timespec{Sec: 1600000000}
	t1 = unix.Timespec{Sec: 1700000000}
)

// Case is one change made on top of the base tree.
type Case struct {
	Name string
	// Change edits the mounted tree at root and returns the paths it
	// created or modified (not removed ones); those and the parents of
	// every path it lists in Parents get mtime t1.
	Change func(root string) (touched []string, err error)
	// Parents lists directories whose content the change altered.
	Parents []string
	// Entries is the exact list of entry names in the diff, or nil to skip
	// the check.
	Entries []string
	// SameBytes says every implementation must produce identical tars.
	SameBytes bool
}

func write(root, p, body string, mode os.FileMode) error {
	return os.WriteFile(filepath.Join(root, p), []byte(body), mode)
}

// buildBase writes the parent tree of every case.
func buildBase(root string) error {
	steps := []func() error{
		func() error { return os.MkdirAll(filepath.Join(root, "etc"), 0o755) },
		func() error { return write(root, "etc/passwd", "root:x:0:0\n", 0o644) },
		func() error { return write(root, "etc/group", "root:x:0:\n", 0o644) },
		func() error { return os.MkdirAll(filepath.Join(root, "dir/sub"), 0o755) },
		func() error { return write(root, "dir/a", "a", 0o644) },
		func() error { return write(root, "dir/b", "b", 0o600) },
		func() error { return write(root, "dir/sub/c", "c", 0o644) },
		func() error { return os.Mkdir(filepath.Join(root, "bin"), 0o755) },
		func() error { return write(root, "bin/tool", "#!/bin/sh\n", 0o755) },
		func() error { return os.Symlink("tool", filepath.Join(root, "bin/link")) },
		func() error { return write(root, "hl1", "shared", 0o644) },
		func() error { return os.Link(filepath.Join(root, "hl1"), filepath.Join(root, "hl2")) },
		func() error { return write(root, "x", "xattr", 0o644) },
		func() error { return unix.Lsetxattr(filepath.Join(root, "x"), "user.base", []byte("1"), 0) },
		func() error { return os.Lchown(filepath.Join(root, "dir/b"), 33, 33) },
		func() error { return os.Mkdir(filepath.Join(root, "keep"), 0o755) },
		func() error { return write(root, "keep/f", "f", 0o644) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{t0, t0}, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func do(fs ...func() error) error {
	for _, f := range fs {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// Cases are the changes the suite makes.
var Cases = []Case{
	{Name: "empty", Change: func(string) ([]string, error) { return nil, nil },
		Entries: []string{}, SameBytes: true},
	{Name: "add file", Change: func(r string) ([]string, error) {
		return []string{"etc/new"}, write(r, "etc/new", "new", 0o640)
	}, Parents: []string{"etc"}, Entries: []string{"etc/", "etc/new"}, SameBytes: true},
	{Name: "modify file", Change: func(r string) ([]string, error) {
		return []string{"etc/passwd"}, write(r, "etc/passwd", "root:x:0:0\nbob:x:1000:1000\n", 0o644)
	}, Entries: []string{"etc/", "etc/passwd"}, SameBytes: true},
	{Name: "modify file same size", Change: func(r string) ([]string, error) {
		return []string{"dir/a"}, write(r, "dir/a", "A", 0o644)
	}, Entries: []string{"dir/", "dir/a"}, SameBytes: true},
	{Name: "delete file", Change: func(r string) ([]string, error) {
		return nil, os.Remove(filepath.Join(r, "etc/group"))
	}, Parents: []string{"etc"}, Entries: []string{"etc/", "etc/.wh.group"}, SameBytes: true},
	{Name: "delete dir", Change: func(r string) ([]string, error) {
		return nil, os.RemoveAll(filepath.Join(r, "dir"))
	}, Parents: []string{"."}, Entries: []string{".wh.dir"}, SameBytes: true},
	{Name: "delete nested", Change: func(r string) ([]string, error) {
		return nil, os.RemoveAll(filepath.Join(r, "dir/sub"))
	}, Parents: []string{"dir"}, Entries: []string{"dir/", "dir/.wh.sub"}, SameBytes: true},
	{Name: "recreate dir", Change: func(r string) ([]string, error) {
		return []string{"dir", "dir/new"}, do(
			func() error { return os.RemoveAll(filepath.Join(r, "dir")) },
			func() error { return os.Mkdir(filepath.Join(r, "dir"), 0o755) },
			func() error { return write(r, "dir/new", "n", 0o644) })
	}, Parents: []string{"."}},
	{Name: "chmod only", Change: func(r string) ([]string, error) {
		return nil, os.Chmod(filepath.Join(r, "etc/passwd"), 0o4600)
	}, Entries: []string{"etc/", "etc/passwd"}, SameBytes: true},
	{Name: "chown only", Change: func(r string) ([]string, error) {
		return nil, os.Lchown(filepath.Join(r, "etc/passwd"), 1000, 1001)
	}, Entries: []string{"etc/", "etc/passwd"}, SameBytes: true},
	{Name: "symlink", Change: func(r string) ([]string, error) {
		return []string{"bin/sh", "bin/link"}, do(
			func() error { return os.Symlink("/bin/busybox", filepath.Join(r, "bin/sh")) },
			func() error { return os.Remove(filepath.Join(r, "bin/link")) },
			func() error { return os.Symlink("elsewhere", filepath.Join(r, "bin/link")) })
	}, Parents: []string{"bin"}, Entries: []string{"bin/", "bin/link", "bin/sh"}, SameBytes: true},
	{Name: "hardlink pair", Change: func(r string) ([]string, error) {
		return []string{"keep/h1", "keep/h2"}, do(
			func() error { return write(r, "keep/h1", "linked", 0o644) },
			func() error { return os.Link(filepath.Join(r, "keep/h1"), filepath.Join(r, "keep/h2")) })
	}, Parents: []string{"keep"}, Entries: []string{"keep/", "keep/h1", "keep/h2"}, SameBytes: true},
	{Name: "xattr", Change: func(r string) ([]string, error) {
		return nil, do(
			func() error { return unix.Lsetxattr(filepath.Join(r, "x"), "user.new", []byte("2"), 0) },
			func() error { return unix.Lsetxattr(filepath.Join(r, "etc/passwd"), "trusted.t", []byte{0, 1, 2}, 0) })
	}, Entries: []string{"etc/", "etc/passwd", "x"}, SameBytes: true},
	{Name: "devices", Change: func(r string) ([]string, error) {
		return []string{"dev", "dev/null", "dev/fifo"}, do(
			func() error { return os.Mkdir(filepath.Join(r, "dev"), 0o755) },
			func() error {
				return unix.Mknod(filepath.Join(r, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
			},
			func() error { return unix.Mkfifo(filepath.Join(r, "dev/fifo"), 0o600) })
	}, Parents: []string{"."}, Entries: []string{"dev/", "dev/fifo", "dev/null"}, SameBytes: true},
	{Name: "replace dir with file", Change: func(r string) ([]string, error) {
		return []string{"dir"}, do(
			func() error { return os.RemoveAll(filepath.Join(r, "dir")) },
			func() error { return write(r, "dir", "file now", 0o644) })
	}, Parents: []string{"."}, Entries: []string{"dir"}, SameBytes: true},
	{Name: "replace file with dir", Change: func(r string) ([]string, error) {
		return []string{"x", "x/in"}, do(
			func() error { return os.Remove(filepath.Join(r, "x")) },
			func() error { return os.Mkdir(filepath.Join(r, "x"), 0o700) },
			func() error { return write(r, "x/in", "in", 0o644) })
	}, Parents: []string{"."}, Entries: []string{"x/", "x/in"}, SameBytes: true},
	{Name: "new tree", Change: func(r string) ([]string, error) {
		return []string{"usr", "usr/lib", "usr/lib/l.so", "usr/bin"}, do(
			func() error { return os.MkdirAll(filepath.Join(r, "usr/lib"), 0o755) },
			func() error { return os.MkdirAll(filepath.Join(r, "usr/bin"), 0o755) },
			func() error { return write(r, "usr/lib/l.so", "elf", 0o755) })
	}, Parents: []string{"."}, Entries: []string{"usr/", "usr/bin/", "usr/lib/", "usr/lib/l.so"}, SameBytes: true},
}

// retime gives every touched path and every listed parent, and all their
// ancestors, mtime t1, so trees match across implementations.
func retime(root string, touched, parents []string) error {
	set := map[string]bool{}
	for _, p := range append(slices.Clone(touched), parents...) {
		for q := p; q != "." && q != "/" && q != ""; q = path.Dir(q) {
			set[q] = true
		}
	}
	set["."] = true
	for p := range set {
		err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, p), []unix.Timespec{t1, t1}, unix.AT_SYMLINK_NOFOLLOW)
		if err != nil {
			return err
		}
	}
	return nil
}

// Base commits the base tree as snapshot "base" if needed.
func Base(t *testing.T, sn snapshot.Snapshotter) {
	t.Helper()
	ctx := context.Background()
	if sn.Exists(ctx, "base") {
		return
	}
	mounts, err := sn.Prepare(ctx, "base-key", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := snapshot.WithMounts(ctx, [][]snapshot.Mount{mounts}, func(r []string) error { return buildBase(r[0]) }); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "base", "base-key"); err != nil {
		t.Fatal(err)
	}
}

// Result is what one case produced.
type Result struct {
	Tar  []byte
	Tree map[string]string // the changed tree, as treetest.Dump shows it
}

// RunCase makes c's change on top of "base", checks the diff and the
// round trip, commits the change as snapshot c.Name, and returns the tar
// and the tree.
func RunCase(t *testing.T, sn snapshot.Snapshotter, c Case) Result {
	t.Helper()
	ctx := context.Background()
	Base(t, sn)
	key := "key-" + c.Name
	mounts, err := sn.Prepare(ctx, key, "base")
	if err != nil {
		t.Fatal(err)
	}
	var res Result
	err = snapshot.WithMounts(ctx, [][]snapshot.Mount{mounts}, func(r []string) error {
		touched, err := c.Change(r[0])
		if err != nil {
			return fmt.Errorf("change: %w", err)
		}
		if len(touched)+len(c.Parents) > 0 {
			if err := retime(r[0], touched, c.Parents); err != nil {
				return err
			}
		}
		res.Tree, err = treetest.Dump(r[0])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sn.Diff(ctx, &buf, key, snapshot.DiffOptions{}); err != nil {
		t.Fatal(err)
	}
	res.Tar = buf.Bytes()
	names := entryNames(t, res.Tar)
	if c.Entries != nil && !slices.Equal(names, c.Entries) {
		t.Errorf("diff entries %q, want %q", names, c.Entries)
	}
	if c.Name == "empty" && len(res.Tar) != 1024 {
		t.Errorf("empty change gave %d bytes, want a bare 1024-byte trailer", len(res.Tar))
	}
	var again bytes.Buffer
	if err := sn.Diff(ctx, &again, key, snapshot.DiffOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Tar, again.Bytes()) {
		t.Error("two diffs of one snapshot differ")
	}
	if err := sn.Commit(ctx, c.Name, key); err != nil {
		t.Fatal(err)
	}

	// Applying the diff on the parent gives the changed tree again.
	applied := "apply-" + c.Name
	mounts, err = sn.Prepare(ctx, applied, "base")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sn.Remove(ctx, applied); err != nil {
			t.Error(err)
		}
	}()
	var got map[string]string
	err = snapshot.WithMounts(ctx, [][]snapshot.Mount{mounts}, func(r []string) error {
		if _, err := archive.Apply(r[0], bytes.NewReader(res.Tar)); err != nil {
			return err
		}
		got, err = treetest.Dump(r[0])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := treetest.Compare(res.Tree, got); d != "" {
		t.Errorf("Apply(Diff) on the parent differs from the changed tree:\n%s", d)
	}
	// The committed snapshot shows the changed tree.
	view, err := sn.View(ctx, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	err = snapshot.WithMounts(ctx, [][]snapshot.Mount{view}, func(r []string) error {
		got, err = treetest.Dump(r[0])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := treetest.Compare(res.Tree, got); d != "" {
		t.Errorf("View of the commit differs from the changed tree:\n%s", d)
	}
	return res
}

func entryNames(t *testing.T, b []byte) []string {
	t.Helper()
	names := []string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("read diff: %v", err)
		}
		names = append(names, h.Name)
	}
}

// CheckNoMounts fails the test if a mount below dir (or a builder mount
// point) is visible in the host namespace.
func CheckNoMounts(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if (dir != "" && strings.Contains(l, dir)) || strings.Contains(l, "builder-mnt-") {
			t.Errorf("mount left behind: %s", l)
		}
	}
}

// Run runs every case and the lifecycle checks on the snapshotter that
// open returns for a new root directory.
func Run(t *testing.T, open func(t *testing.T, root string) snapshot.Snapshotter) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	sn := open(t, root)
	defer CheckNoMounts(t, root)
	for _, c := range Cases {
		t.Run(strings.ReplaceAll(c.Name, " ", "_"), func(t *testing.T) { RunCase(t, sn, c) })
	}
	t.Run("recreate_dir_hides_old_children", func(t *testing.T) {
		res := RunCase(t, sn, Case{Name: "recreate again", Change: Cases[7].Change, Parents: Cases[7].Parents})
		for _, gone := range []string{"dir/a", "dir/b", "dir/sub", "dir/sub/c"} {
			if _, ok := res.Tree[gone]; ok {
				t.Errorf("%s survives rm -rf", gone)
			}
		}
	})
	t.Run("lifecycle", func(t *testing.T) { lifecycle(t, sn) })
	t.Run("chain", func(t *testing.T) { chain(t, sn) })
	t.Run("delete", func(t *testing.T) { deleteCommitted(t, sn) })
}

// deleteCommitted checks List and Delete: a parent is kept while a child
// or an active snapshot is built on it, and goes once they are gone.
func deleteCommitted(t *testing.T, sn snapshot.Snapshotter) {
	ctx := context.Background()
	Base(t, sn)
	for _, n := range []string{"del-a", "del-b"} {
		parent := "base"
		if n == "del-b" {
			parent = "del-a"
		}
		if _, err := sn.Prepare(ctx, n+"-key", parent); err != nil {
			t.Fatal(err)
		}
		if err := sn.Commit(ctx, n, n+"-key"); err != nil {
			t.Fatal(err)
		}
	}
	listed := map[string]string{}
	infos, err := sn.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		listed[in.Name] = in.Parent
		if st, err := os.Stat(in.Dir); err != nil || !st.IsDir() {
			t.Errorf("List: %s has no directory %s: %v", in.Name, in.Dir, err)
		}
	}
	if p, ok := listed["del-b"]; !ok || p != "del-a" {
		t.Errorf("List: del-b parent %q (listed %v)", p, ok)
	}
	if err := sn.Delete(ctx, "del-a"); !errors.Is(err, snapshot.ErrInUse) {
		t.Errorf("Delete of a parent: %v, want ErrInUse", err)
	}
	if _, err := sn.Prepare(ctx, "del-active", "del-b"); err != nil {
		t.Fatal(err)
	}
	if err := sn.Delete(ctx, "del-b"); !errors.Is(err, snapshot.ErrInUse) {
		t.Errorf("Delete under an active snapshot: %v, want ErrInUse", err)
	}
	if err := sn.Remove(ctx, "del-active"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"del-b", "del-a", "del-a"} {
		if err := sn.Delete(ctx, n); err != nil {
			t.Errorf("Delete %s: %v", n, err)
		}
		if sn.Exists(ctx, n) {
			t.Errorf("%s exists after Delete", n)
		}
	}
	if !sn.Exists(ctx, "base") {
		t.Error("Delete removed an unrelated snapshot")
	}
}

func lifecycle(t *testing.T, sn snapshot.Snapshotter) {
	ctx := context.Background()
	Base(t, sn)
	if _, err := sn.Prepare(ctx, "k", "missing"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Prepare on a missing parent: %v", err)
	}
	if _, err := sn.Prepare(ctx, "k", "base"); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Prepare(ctx, "k", "base"); !errors.Is(err, snapshot.ErrExists) {
		t.Errorf("second Prepare of a key: %v", err)
	}
	if _, err := sn.View(ctx, "missing"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("View of a missing name: %v", err)
	}
	if err := sn.Diff(ctx, io.Discard, "missing", snapshot.DiffOptions{}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Diff of a missing key: %v", err)
	}
	if err := sn.Commit(ctx, "c1", "k"); err != nil {
		t.Fatal(err)
	}
	if !sn.Exists(ctx, "c1") || sn.Exists(ctx, "k") {
		t.Error("Exists wrong after Commit")
	}
	// Idempotent Commit: a second key committed under the same name goes
	// away, and so does a repeat of the first call.
	if _, err := sn.Prepare(ctx, "k2", "base"); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "c1", "k2"); err != nil {
		t.Errorf("Commit onto an existing name: %v", err)
	}
	if err := sn.Commit(ctx, "c1", "k"); err != nil {
		t.Errorf("repeated Commit: %v", err)
	}
	if _, err := sn.Prepare(ctx, "k2", "base"); err != nil {
		t.Errorf("key not freed by Commit onto an existing name: %v", err)
	}
	if err := sn.Remove(ctx, "k2"); err != nil {
		t.Error(err)
	}
	if err := sn.Remove(ctx, "k2"); err != nil {
		t.Errorf("Remove of a missing key: %v", err)
	}
	if err := sn.Commit(ctx, "c2", "never-prepared"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Commit of a missing key: %v", err)
	}
	// Epoch clamps mtimes.
	mounts, err := sn.Prepare(ctx, "k4", "base")
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Remove(ctx, "k4") //nolint:errcheck
	if err := snapshot.WithMounts(ctx, [][]snapshot.Mount{mounts}, func(r []string) error {
		return write(r[0], "etc/epoch", "e", 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	epoch := int64(12345)
	var buf bytes.Buffer
	if err := sn.Diff(ctx, &buf, "k4", snapshot.DiffOptions{Epoch: &epoch}); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.ModTime.Unix() != epoch {
			t.Errorf("%s: mtime %d, want clamped to %d", h.Name, h.ModTime.Unix(), epoch)
		}
	}
}

// chain stacks several layers and checks the top sees all of them.
func chain(t *testing.T, sn snapshot.Snapshotter) {
	ctx := context.Background()
	Base(t, sn)
	parent := "base"
	for i := range 5 {
		name := fmt.Sprintf("chain-%d", i)
		mounts, err := sn.Prepare(ctx, name+"-key", parent)
		if err != nil {
			t.Fatal(err)
		}
		err = snapshot.WithMounts(ctx, [][]snapshot.Mount{mounts}, func(r []string) error {
			if i > 0 {
				if err := os.Remove(filepath.Join(r[0], fmt.Sprintf("layer%d", i-1))); err != nil {
					return err
				}
			}
			return write(r[0], fmt.Sprintf("layer%d", i), "l", 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := sn.Commit(ctx, name, name+"-key"); err != nil {
			t.Fatal(err)
		}
		parent = name
	}
	view, err := sn.View(ctx, parent)
	if err != nil {
		t.Fatal(err)
	}
	err = snapshot.WithMounts(ctx, [][]snapshot.Mount{view}, func(r []string) error {
		ents, err := os.ReadDir(r[0])
		if err != nil {
			return err
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		want := []string{"bin", "dir", "etc", "hl1", "hl2", "keep", "layer4", "x"}
		if !slices.Equal(names, want) {
			return fmt.Errorf("top of chain lists %v, want %v", names, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

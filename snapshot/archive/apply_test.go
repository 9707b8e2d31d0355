package archive

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"builder/internal/testenv"
	"builder/snapshot/internal/treetest"
)

func needRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
}

func applyFixture(t *testing.T, root, name string) (int64, error) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Apply(root, f)
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestApplyHostile applies hostile fixtures into <tmp>/root next to a
// canary file and checks nothing outside root changed.
func TestApplyHostile(t *testing.T) {
	needRoot(t)
	passwd := fileSum(t, "/etc/passwd")
	var passwdSt unix.Stat_t
	if err := unix.Stat("/etc/passwd", &passwdSt); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		fixture string
		wantErr bool
		inside  map[string]string // path in root -> content ("" just exists)
	}{
		{"dotdot.tar", true, nil},
		{"dotdot-nested.tar", true, nil},
		{"absolute.tar", false, map[string]string{"abs-escape": "inside"}},
		{"abs-dotdot.tar", false, map[string]string{"abs-dotdot": "inside"}},
		{"symlink-etc.tar", true, nil}, // no directories through a dangling symlink
		{"symlink-etc-dir.tar", false, map[string]string{"etc/passwd": "pwned"}},
		{"symlink-dotdot.tar", false, map[string]string{"escape": "inside"}},
		{"symlink-chain.tar", false, map[string]string{"c/escape": "inside"}},
		{"symlink-replace.tar", false, map[string]string{"f": "replaced"}},
		{"symlink-file.tar", false, map[string]string{"f": ""}},
		{"hardlink-dotdot.tar", true, nil},
		{"hardlink-abs.tar", true, nil},
		{"hardlink-symlink.tar", true, nil},
		{"hardlink-outlink.tar", false, map[string]string{"x": "written"}},
		{"whiteout-dotdot.tar", true, nil},
		{"whiteout-dot.tar", true, nil},
		{"whiteout-escape.tar", true, nil},
		{"whiteout-symlink.tar", false, nil},
		{"opaque-symlink.tar", false, nil},
		{"symlink-loop.tar", true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			tmp := t.TempDir()
			root := filepath.Join(tmp, "root")
			canary := filepath.Join(tmp, "canary")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(canary, []byte("canary"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := applyFixture(t, root, tc.fixture)
			if (err != nil) != tc.wantErr {
				t.Errorf("Apply error = %v, want error %v", err, tc.wantErr)
			}
			ents, _ := os.ReadDir(tmp)
			if len(ents) != 2 {
				t.Errorf("entries next to root: %v", ents)
			}
			if b, err := os.ReadFile(canary); err != nil || string(b) != "canary" {
				t.Errorf("canary changed: %q %v", b, err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(canary, &st); err != nil || st.Nlink != 1 {
				t.Errorf("canary links: %d %v", st.Nlink, err)
			}
			if fileSum(t, "/etc/passwd") != passwd {
				t.Fatal("/etc/passwd changed")
			}
			if err := unix.Stat("/etc/passwd", &st); err != nil || st.Nlink != passwdSt.Nlink {
				t.Fatalf("/etc/passwd gained a link")
			}
			for p, want := range tc.inside {
				got, err := os.ReadFile(filepath.Join(root, p))
				if want == "" {
					if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
						t.Errorf("%s missing in root: %v", p, err)
					}
					continue
				}
				if err != nil || string(got) != want {
					t.Errorf("%s in root = %q, %v; want %q", p, got, err, want)
				}
			}
		})
	}
}

// TestApplyFeatures applies features.tar and then changes.tar on top and
// compares the trees with what the entries describe.
func TestApplyFeatures(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	n, err := applyFixture(t, root, "features.tar")
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat("testdata/features.tar"); n != fi.Size() {
		t.Errorf("Apply read %d bytes, file has %d", n, fi.Size())
	}
	got, err := treetest.Dump(root)
	if err != nil {
		t.Fatal(err)
	}
	const m = " mtime=1700000000"
	want := map[string]string{
		"dev":                  "mode=40755 uid=0 gid=0" + "",
		"dev/blk":              "mode=60600 uid=0 gid=0 dev=7,0" + m,
		"dev/fifo":             "mode=10640 uid=0 gid=0" + m,
		"dev/null":             "mode=20666 uid=0 gid=0 dev=1,3" + m,
		"dir":                  "mode=42750 uid=0 gid=0" + m,
		"dir/hard":             "mode=104755 uid=1000 gid=1001 size=3 sha=" + sum8("bin") + " hardlink=dir/suid" + m,
		"dir/suid":             "mode=104755 uid=1000 gid=1001 size=3 sha=" + sum8("bin") + "" + m,
		"dir/sym":              "mode=120777 uid=7 gid=8 link=/nowhere" + m,
		"dir/xattr":            `mode=100600 uid=0 gid=0 size=1 sha=` + sum8("x") + ` xattr:trusted.t="tv" xattr:user.k="v"` + m,
		"implicit":             "mode=40755 uid=0 gid=0",
		"implicit/parent":      "mode=40755 uid=0 gid=0",
		"implicit/parent/file": "mode=100644 uid=0 gid=0 size=2 sha=" + sum8("ip") + "" + m,
	}
	// Implicit parents get the time of their creation; drop it.
	for _, k := range []string{"dev", "implicit", "implicit/parent"} {
		got[k] = got[k][:strings.Index(got[k], " mtime=")]
	}
	// dir/hard sorts before dir/suid in the walk, so the dump names it first.
	got["dir/hard"], got["dir/suid"] = strings.Replace(got["dir/suid"], "hardlink=dir/hard", "hardlink=dir/suid", 1), strings.Replace(got["dir/hard"], " hardlink=dir/suid", "", 1)
	if d := treetest.Compare(want, got); d != "" {
		t.Fatalf("after features.tar:\n%s", d)
	}
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil || st.Mtim.Sec != 1700000000 || st.Mode&0o7777 != 0o755 {
		t.Errorf("root entry metadata not applied: mode %o mtime %d", st.Mode, st.Mtim.Sec)
	}

	if _, err := applyFixture(t, root, "changes.tar"); err != nil {
		t.Fatal(err)
	}
	got, err = treetest.Dump(root)
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]string{
		"dev":          "mode=100644 uid=0 gid=0 size=20 sha=" + sum8("dir replaced by file") + m,
		"dir":          "mode=40700 uid=5 gid=6 mtime=1700003600",
		"dir/hard":     "mode=104755 uid=1000 gid=1001 size=3 sha=" + sum8("bin") + " hardlink=dir/suid" + m,
		"dir/suid":     "mode=104755 uid=1000 gid=1001 size=3 sha=" + sum8("bin") + "" + m,
		"dir/sym":      "mode=100644 uid=0 gid=0 size=10 sha=" + sum8("now a file") + m,
		"implicit":     "mode=40755 uid=0 gid=0" + m,
		"implicit/new": "mode=100644 uid=0 gid=0 size=1 sha=" + sum8("n") + m,
	}
	got["dir/hard"], got["dir/suid"] = strings.Replace(got["dir/suid"], "hardlink=dir/hard", "hardlink=dir/suid", 1), strings.Replace(got["dir/hard"], " hardlink=dir/suid", "", 1)
	if d := treetest.Compare(want, got); d != "" {
		t.Fatalf("after changes.tar:\n%s", d)
	}
}

func sum8(s string) string {
	h := sha256.Sum256([]byte(s))
	const hexd = "0123456789abcdef"
	var b strings.Builder
	for _, c := range h[:8] {
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

func TestApplyRejectsWhiteoutDevice(t *testing.T) {
	needRoot(t)
	var buf bytes.Buffer
	w := NewWriter(&buf, nil)
	dir := t.TempDir()
	if err := unix.Mknod(filepath.Join(dir, "wh"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Add("wh", filepath.Join(dir, "wh")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(t.TempDir(), &buf); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("got %v, want refusal of a 0/0 device", err)
	}
}

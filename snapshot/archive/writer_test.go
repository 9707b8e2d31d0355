package archive

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"builder/snapshot/internal/treetest"
)

func TestNormalize(t *testing.T) {
	epoch := int64(1000)
	mt := time.Unix(2000, 999)
	tests := []struct {
		name  string
		in    tar.Header
		epoch *int64
		want  tar.Header
	}{
		{"file", tar.Header{Typeflag: tar.TypeReg, Name: "/a/b", Uname: "root", Gname: "wheel", ModTime: mt,
			AccessTime: mt, ChangeTime: mt, Devmajor: 3, Devminor: 4},
			nil,
			tar.Header{Typeflag: tar.TypeReg, Name: "a/b", ModTime: time.Unix(2000, 0), Format: tar.FormatPAX}},
		{"dir gets slash, epoch clamps", tar.Header{Typeflag: tar.TypeDir, Name: "d", ModTime: mt},
			&epoch,
			tar.Header{Typeflag: tar.TypeDir, Name: "d/", ModTime: time.Unix(1000, 0), Format: tar.FormatPAX}},
		{"epoch leaves older mtime", tar.Header{Typeflag: tar.TypeReg, Name: "f", ModTime: time.Unix(5, 7)},
			&epoch,
			tar.Header{Typeflag: tar.TypeReg, Name: "f", ModTime: time.Unix(5, 0), Format: tar.FormatPAX}},
		{"device keeps numbers", tar.Header{Typeflag: tar.TypeChar, Name: "c", Devmajor: 1, Devminor: 3, ModTime: mt},
			nil,
			tar.Header{Typeflag: tar.TypeChar, Name: "c", Devmajor: 1, Devminor: 3, ModTime: time.Unix(2000, 0), Format: tar.FormatPAX}},
		{"hard link target loses slash", tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "/x/y", ModTime: mt},
			nil,
			tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "x/y", ModTime: time.Unix(2000, 0), Format: tar.FormatPAX}},
		{"only layer xattrs kept", tar.Header{Typeflag: tar.TypeReg, Name: "x", ModTime: mt, PAXRecords: map[string]string{
			"SCHILY.xattr.user.a": "1", "SCHILY.xattr.trusted.overlay.origin": "o", "SCHILY.xattr.user.overlay.x": "u",
			"mtime": "1.5", "uname": "bob"}},
			nil,
			tar.Header{Typeflag: tar.TypeReg, Name: "x", ModTime: time.Unix(2000, 0), Format: tar.FormatPAX,
				PAXRecords: map[string]string{"SCHILY.xattr.user.a": "1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.in
			normalize(&h, tc.epoch)
			if !reflect.DeepEqual(h, tc.want) {
				t.Errorf("got  %+v\nwant %+v", h, tc.want)
			}
		})
	}
}

// TestWriterRoundTrip writes a tree with Writer, applies the tar elsewhere
// and compares both trees; writing twice must give identical bytes.
func TestWriterRoundTrip(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	if _, err := applyFixture(t, src, "features.tar"); err != nil {
		t.Fatal(err)
	}
	// Nanosecond mtimes must not leak into the tar.
	ts := []unix.Timespec{{Sec: 1700000000, Nsec: 123}, {Sec: 1700000000, Nsec: 456}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, "dir/xattr"), ts, 0); err != nil {
		t.Fatal(err)
	}
	write := func() []byte {
		var buf bytes.Buffer
		w := NewWriter(&buf, nil)
		err := filepath.WalkDir(src, func(p string, _ os.DirEntry, err error) error {
			if err != nil || p == src {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			return w.Add(filepath.ToSlash(rel), p)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	a, b := write(), write()
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of one tree differ")
	}
	tr := tar.NewReader(bytes.NewReader(a))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "dir/hard" && h.Typeflag != tar.TypeReg {
			t.Errorf("first path of a hard-link pair is not the regular file")
		}
		if h.Name == "dir/suid" && (h.Typeflag != tar.TypeLink || h.Linkname != "dir/hard") {
			t.Errorf("second path of a hard-link pair: %c -> %s", h.Typeflag, h.Linkname)
		}
		if h.Uname != "" || !h.AccessTime.IsZero() || h.ModTime.Nanosecond() != 0 {
			t.Errorf("%s: header not normalized: %+v", h.Name, h)
		}
	}
	wantNames := []string{"dev/", "dev/blk", "dev/fifo", "dev/null", "dir/", "dir/hard", "dir/suid", "dir/sym", "dir/xattr",
		"implicit/", "implicit/parent/", "implicit/parent/file"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("entries %v, want %v", names, wantNames)
	}
	dst := t.TempDir()
	if _, err := Apply(dst, bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	want, err := treetest.Dump(src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := treetest.Dump(dst)
	if err != nil {
		t.Fatal(err)
	}
	if d := treetest.Compare(want, got); d != "" {
		t.Fatalf("round trip differs:\n%s", d)
	}
}

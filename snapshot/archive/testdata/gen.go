//go:build ignore

// Command gen writes the tar fixtures of the archive tests:
//
//	cd snapshot/archive/testdata && go run gen.go
//
// Hostile fixtures try to write, link or delete outside the extraction
// root; the others exercise every entry type Apply supports.
package main

import (
	"archive/tar"
	"log"
	"os"
	"time"
)

type entry struct {
	h    tar.Header
	body string
}

var mtime = time.Unix(1700000000, 0)

func reg(name, body string) entry {
	return entry{tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: mtime}, body}
}

func dir(name string, mode int64) entry {
	return entry{h: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: mtime}}
}

func symlink(name, target string) entry {
	return entry{h: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, ModTime: mtime}}
}

func hardlink(name, target string) entry {
	return entry{h: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: mtime}}
}

var fixtures = map[string][]entry{
	// Hostile input.
	"dotdot.tar":           {reg("../escape", "pwned")},
	"dotdot-nested.tar":    {dir("a/", 0o755), reg("a/../../escape", "pwned")},
	"absolute.tar":         {reg("/abs-escape", "inside")},
	"abs-dotdot.tar":       {reg("/../../abs-dotdot", "inside")},
	"symlink-etc.tar":      {symlink("link", "/etc"), reg("link/passwd", "pwned")},
	"symlink-etc-dir.tar":  {dir("etc/", 0o755), symlink("link", "/etc"), reg("link/passwd", "pwned")},
	"symlink-dotdot.tar":   {symlink("link", "../../../../.."), reg("link/escape", "inside")},
	"symlink-chain.tar":    {symlink("a", "b/../.."), symlink("b", "/.."), dir("a/c/", 0o755), reg("a/c/escape", "inside")},
	"symlink-replace.tar":  {symlink("f", "../canary"), reg("f", "replaced")},
	"symlink-file.tar":     {symlink("f", "../canary"), dir("f/", 0o755)},
	"hardlink-dotdot.tar":  {hardlink("x", "../../etc/passwd")},
	"hardlink-abs.tar":     {hardlink("x", "/etc/passwd")},
	"hardlink-symlink.tar": {symlink("l", "/etc"), hardlink("x", "l/passwd")},
	"hardlink-outlink.tar": {symlink("l", "../canary"), hardlink("x", "l"), reg("x", "written")},
	"whiteout-dotdot.tar":  {reg(".wh...", "")},
	"whiteout-dot.tar":     {reg("sub/.wh..", "")},
	"whiteout-escape.tar":  {reg("../.wh.canary", "")},
	"whiteout-symlink.tar": {symlink("l", ".."), reg("l/.wh.canary", "")},
	"opaque-symlink.tar":   {symlink("l", "../.."), reg("l/.wh..wh..opq", "")},
	"symlink-loop.tar":     {symlink("a", "a"), reg("a/x", "loop")},

	// Ordinary input.
	"features.tar": {
		dir("./", 0o755),
		dir("dir/", 0o2750),
		{tar.Header{Typeflag: tar.TypeReg, Name: "dir/suid", Mode: 0o4755, Uid: 1000, Gid: 1001, Size: 3, ModTime: mtime}, "bin"},
		{tar.Header{Typeflag: tar.TypeReg, Name: "dir/xattr", Mode: 0o600, Size: 1, ModTime: mtime,
			PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.t": "tv",
				"SCHILY.xattr.trusted.overlay.opaque": "y"}}, "x"},
		hardlink("dir/hard", "dir/suid"),
		{tar.Header{Typeflag: tar.TypeSymlink, Name: "dir/sym", Linkname: "/nowhere", Uid: 7, Gid: 8, ModTime: mtime}, ""},
		{tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime}, ""},
		{tar.Header{Typeflag: tar.TypeBlock, Name: "dev/blk", Mode: 0o600, Devmajor: 7, Devminor: 0, ModTime: mtime}, ""},
		{tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o640, ModTime: mtime}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "implicit/parent/file", Mode: 0o644, Size: 2, ModTime: mtime}, "ip"},
	},
	// Applied on top of features.tar.
	"changes.tar": {
		{tar.Header{Typeflag: tar.TypeDir, Name: "dir/", Mode: 0o700, Uid: 5, Gid: 6, ModTime: mtime.Add(time.Hour)}, ""},
		reg("dir/.wh.xattr", ""),
		reg("dir/sym", "now a file"),
		reg("dev", "dir replaced by file"),
		dir("implicit/", 0o755),
		reg("implicit/.wh..wh..opq", ""),
		reg("implicit/new", "n"),
	},
}

func main() {
	for name, entries := range fixtures {
		f, err := os.Create(name)
		if err != nil {
			log.Fatal(err)
		}
		tw := tar.NewWriter(f)
		for _, e := range entries {
			h := e.h
			h.Format = tar.FormatPAX
			if err := tw.WriteHeader(&h); err != nil {
				log.Fatalf("%s: %v", name, err)
			}
			if _, err := tw.Write([]byte(e.body)); err != nil {
				log.Fatalf("%s: %v", name, err)
			}
		}
		if err := tw.Close(); err != nil {
			log.Fatal(err)
		}
		if err := f.Close(); err != nil {
			log.Fatal(err)
		}
	}
}

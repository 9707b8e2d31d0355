package passwd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func open(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestReadUsers(t *testing.T) {
	got, err := ReadUsers(open(t, "testdata/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	want := []User{{Name: "root", UID: 0, GID: 0, Home: "/root"}, {Name: "app", UID: 1000, GID: 1001, Home: "/home/app"},
		{Name: "short", UID: 7, GID: 8}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestReadGroups(t *testing.T) {
	got, err := ReadGroups(open(t, "testdata/group"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Group{{Name: "root", GID: 0}, {Name: "staff", GID: 50, Members: []string{"app", "root"}}, {Name: "app", GID: 1001}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestParseID(t *testing.T) {
	for in, want := range map[string]error{"0": nil, "2147483647": nil, "2147483648": ErrIDRange,
		"99999999999999999999": ErrIDRange} {
		if _, err := ParseID(in); !errors.Is(err, want) {
			t.Errorf("ParseID(%q) = %v, want %v", in, err, want)
		}
	}
	if _, err := ParseID("app"); err == nil {
		t.Error("ParseID(app) succeeded")
	}
}

// TestHostileFiles checks that a FIFO, a device, a directory or an
// oversized file is refused, never read without end or waited on.
func TestHostileFiles(t *testing.T) {
	for name, make := range map[string]func(p string) error{
		"fifo":    func(p string) error { return unix.Mkfifo(p, 0o644) },
		"devzero": func(p string) error { return os.Symlink("/dev/zero", p) },
		"huge":    func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte("x"), MaxSize+1), 0o644) },
		"dir":     func(p string) error { return os.Mkdir(p, 0o755) },
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "passwd")
			if err := make(p); err != nil {
				t.Fatal(err)
			}
			_, err := ReadUsers(open(t, p))
			if err == nil || !strings.Contains(err.Error(), p) {
				t.Errorf("a %s passwd: %v", name, err)
			}
		})
	}
}

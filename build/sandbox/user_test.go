package sandbox

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"builder/build/internal/passwd"
)

func TestResolveUser(t *testing.T) {
	const passwd, group = "testdata/rootfs/etc/passwd", "testdata/rootfs/etc/group"
	tests := []struct {
		user    string
		want    execUser
		wantErr string
	}{
		{user: "", want: execUser{UID: 0, GID: 0, Groups: []uint32{0}, Home: "/root"}},
		{user: "root", want: execUser{UID: 0, GID: 0, Groups: []uint32{0}, Home: "/root"}},
		{user: "app", want: execUser{UID: 1000, GID: 1000, Groups: []uint32{1000, 2000, 3000}, Home: "/home/app"}},
		{user: "1000", want: execUser{UID: 1000, GID: 1000, Groups: []uint32{1000, 2000, 3000}, Home: "/home/app"}},
		{user: "nobody", want: execUser{UID: 65534, GID: 65534, Groups: []uint32{65534, 3000}, Home: "/nonexistent"}},
		{user: "1000:2000", want: execUser{UID: 1000, GID: 2000, Groups: []uint32{2000}, Home: "/home/app"}},
		{user: "app:extra", want: execUser{UID: 1000, GID: 2000, Groups: []uint32{2000}, Home: "/home/app"}},
		{user: "app:4242", want: execUser{UID: 1000, GID: 4242, Groups: []uint32{4242}, Home: "/home/app"}},
		{user: "4242", want: execUser{UID: 4242, GID: 0, Groups: []uint32{0}, Home: "/"}},
		{user: "4242:tools", want: execUser{UID: 4242, GID: 3000, Groups: []uint32{3000}, Home: "/"}},
		{user: "svc", wantErr: "unable to find user svc: no matching entries in passwd file"},
		{user: "app:nogrp", wantErr: "unable to find group nogrp: no matching entries in group file"},
		{user: "99999999999", wantErr: "uids and gids must be in range"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			got, err := resolveUser(tt.user, passwd, group)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolveUser(%q) error = %v, want %q", tt.user, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.UID != tt.want.UID || got.GID != tt.want.GID || got.Home != tt.want.Home ||
				!slices.Equal(got.Groups, tt.want.Groups) {
				t.Fatalf("resolveUser(%q) = %+v, want %+v", tt.user, got, tt.want)
			}
		})
	}
}

func TestResolveUserMissingFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := resolveUser("app", dir+"/passwd", dir+"/group"); err == nil ||
		err.Error() != "unable to find user app: no matching entries in passwd file" {
		t.Fatalf("named user without passwd: err = %v", err)
	}
	u, err := resolveUser("1000:1000", dir+"/passwd", dir+"/group")
	if err != nil || u.UID != 1000 || u.GID != 1000 || u.Home != "/" {
		t.Fatalf("numeric user without passwd = %+v, %v", u, err)
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		opts      []string
		wantFlags uintptr
		wantData  string
	}{
		{[]string{"rbind", "ro"}, 0x1000 | 0x4000 | 0x1, ""},
		{[]string{"ro", "rw", "nosuid"}, 0x2, ""},
		{[]string{"lowerdir=/a:/b", "upperdir=/u", "workdir=/w", "rprivate"}, 0, "lowerdir=/a:/b,upperdir=/u,workdir=/w"},
		{[]string{"size=64m", "mode=1777", "noexec"}, 0x8, "size=64m,mode=1777"},
	}
	for _, tt := range tests {
		flags, data := parseOptions(tt.opts)
		if flags != tt.wantFlags || data != tt.wantData {
			t.Errorf("parseOptions(%q) = %#x, %q; want %#x, %q", tt.opts, flags, data, tt.wantFlags, tt.wantData)
		}
	}
}

// TestResolveUserHostileFiles: an image's /etc/passwd that is a FIFO, a
// link to /dev/zero or a huge file gives an error, never a hang or an
// unbounded read.
func TestResolveUserHostileFiles(t *testing.T) {
	for name, make := range map[string]func(p string) error{
		"fifo":    func(p string) error { return unix.Mkfifo(p, 0o644) },
		"devzero": func(p string) error { return os.Symlink("/dev/zero", p) },
		"huge":    func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte("x"), passwd.MaxSize+1), 0o644) },
		"dir":     func(p string) error { return os.Mkdir(p, 0o755) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := make(dir + "/passwd"); err != nil {
				t.Fatal(err)
			}
			_, err := resolveUser("app", dir+"/passwd", dir+"/group")
			if err == nil || !strings.Contains(err.Error(), dir+"/passwd") {
				t.Errorf("resolveUser with a %s passwd: %v", name, err)
			}
		})
	}
}

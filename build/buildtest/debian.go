package buildtest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// DebianMirror is where DebianImage's debootstrap fetches packages.
const DebianMirror = "http://deb.debian.org/debian"

// DebianImage returns a one-layer Debian bookworm image made with
// debootstrap --variant=minbase, the one fixture that reaches Debian's
// archive. The layer tar is cached in the system temp directory under a
// name holding today's date, so repeated runs of a day reuse it; parallel
// test processes take turns through a lock file there.
func DebianImage(t testing.TB) v1.Image {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "debootstrap")
	tarPath := debianTar(t)
	layer, err := tarball.LayerFromFile(tarPath, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return OneLayerImage(t, layer, v1.History{}, v1.Time{}, "bash")
}

// debianTar returns the cached layer tar of the Debian root filesystem,
// making it first if needed.
func debianTar(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "builder-buildtest-debian-"+time.Now().UTC().Format("20060102"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "rootfs.tar")
	if _, err := os.Stat(tarPath); err == nil {
		return tarPath
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if _, err := os.Stat(filepath.Join(rootfs, "etc/debian_version")); err != nil {
		tmp := rootfs + ".tmp"
		// debootstrap mounts /proc and /sys in the target while it works;
		// a run that died may have left them, and RemoveAll must not
		// descend into them.
		if m := Mounts(t, tmp); len(m) > 0 {
			t.Fatalf("mounts left under %s by an earlier debootstrap: %q", tmp, m)
		}
		if err := os.RemoveAll(tmp); err != nil {
			t.Fatal(err)
		}
		t.Logf("debootstrap --variant=minbase bookworm from %s (cached in %s for today)", DebianMirror, dir)
		out, err := exec.Command("debootstrap", "--variant=minbase", "bookworm", tmp, DebianMirror).CombinedOutput()
		if m := Mounts(t, tmp); len(m) > 0 {
			t.Errorf("debootstrap left mounts: %q", m)
		}
		if err != nil {
			t.Fatalf("debootstrap: %v\n%s", err, out)
		}
		if err := os.Rename(tmp, rootfs); err != nil {
			t.Fatal(err)
		}
	}
	// The image has no package cache, no lists and an empty /dev, as
	// Docker's debian images.
	partial := tarPath + ".tmp"
	out, err := exec.Command("tar", "-C", rootfs, "--numeric-owner", "--xattrs", "-cf", partial,
		"--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
		"--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("tar the Debian root filesystem: %v\n%s", err, out)
	}
	if err := os.Rename(partial, tarPath); err != nil {
		t.Fatal(err)
	}
	return tarPath
}

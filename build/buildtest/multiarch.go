package buildtest

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/internal/testenv"
)

// DebsEnv names the directory holding Debian's busybox-static .deb of
// each foreign architecture the tests use (busybox-static_*_arm64.deb);
// .ci/run downloads them there. Default DefaultDebsDir.
const DebsEnv = "BUILDER_TEST_DEBS"

// DefaultDebsDir is where .ci/run puts the .debs when DebsEnv is unset.
const DefaultDebsDir = "/var/cache/builder-test"

// ForeignBusybox returns Debian's static busybox binary for arch (GOARCH
// names), read out of busybox-static_*_<arch>.deb in the DebsEnv
// directory with dpkg-deb. Without the .deb, t skips (fails in CI).
func ForeignBusybox(t testing.TB, arch string) []byte {
	t.Helper()
	if arch == runtime.GOARCH {
		b, err := os.ReadFile(BusyboxPath)
		if err != nil {
			testenv.Skip(t, "busybox-static: %v", err)
		}
		return b
	}
	dir := os.Getenv(DebsEnv)
	if dir == "" {
		dir = DefaultDebsDir
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "busybox-static_*_"+arch+".deb"))
	if len(debs) == 0 {
		testenv.Skip(t, "no busybox-static_*_%s.deb in %s (see .ci/run: apt-get download busybox-static:%s)", arch, dir, arch)
	}
	RequireTool(t, "dpkg-deb")
	out, err := exec.Command("dpkg-deb", "--fsys-tarfile", debs[0]).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile %s: %v", debs[0], err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s has no bin/busybox", debs[0])
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "./bin/busybox" || h.Name == "bin/busybox" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// PlatformBusyboxImage returns the busybox image (as BusyboxImage) for
// linux/arch.
func PlatformBusyboxImage(t testing.TB, arch string) v1.Image {
	t.Helper()
	img := busyboxImage(t, busyboxLayer(t, ForeignBusybox(t, arch)))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = arch
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// BusyboxIndex returns an OCI index of the busybox image for each of
// archs (linux), in order.
func BusyboxIndex(t testing.TB, archs ...string) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, a := range archs {
		adds = append(adds, mutate.IndexAddendum{Add: PlatformBusyboxImage(t, a),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: a}}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

// MultiArchRegistry starts a registry holding the linux/amd64 and
// linux/arm64 busybox index as HOST/busybox:multi and returns that
// reference.
func MultiArchRegistry(t testing.TB) string {
	t.Helper()
	ref := Registry(t) + "/busybox:multi"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, BusyboxIndex(t, "amd64", "arm64")); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

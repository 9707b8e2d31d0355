package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/buildtest"
)

// flipStoreBit inverts one bit in the middle of blob d of the store at
// root, in place.
func flipStoreBit(t *testing.T, root string, d v1.Hash) {
	t.Helper()
	p := filepath.Join(root, "blobs", "sha256", d.Hex)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x04
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCLICorruptBlob flips one bit of a layer blob in the store, the
// pulled base layer or the layer a RUN built, and builds (a cached
// rebuild) to every output type: each fails naming the blob and pointing
// at builder check, writes nothing, and the next build fetches or rebuilds
// the blob and gives the reference bytes. Then check --repair on two
// corrupt blobs fetches the base layer again, drops the built one's cache
// record and reports the built image as not repaired until it is rebuilt.
func TestCLICorruptBlob(t *testing.T) {
	buildtest.RequireRoot(t)
	t.Setenv("SOURCE_DATE_EPOCH", "0")
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	ctx := writeCase(t, "FROM "+base+"\nRUN echo integrity > /f\n", map[string]string{})
	outDir := t.TempDir()
	build := func(out string) (string, int) {
		return cli(t, "--root", root, "build", "-q", "-t", "app", "-o", out, ctx)
	}
	ref := filepath.Join(outDir, "ref.tar")
	if out, code := build("type=oci,dest=" + ref); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	want, _ := os.ReadFile(ref)
	img, _ := readOCIArchive(t, ref)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 2 {
		t.Fatalf("%d layers, want the base's and the RUN's", len(m.Layers))
	}
	layers := map[string]v1.Hash{"base": m.Layers[0].Digest, "built": m.Layers[1].Digest}
	outputs := []string{"oci", "docker", "local", "tar"}
	for _, which := range []string{"base", "built"} {
		for _, typ := range outputs {
			bad := layers[which]
			flipStoreBit(t, root, bad)
			dest := filepath.Join(outDir, which+"-"+typ)
			out, code := build("type=" + typ + ",dest=" + dest)
			if code == 0 || !strings.Contains(out, bad.String()) || !strings.Contains(out, "builder check") {
				t.Errorf("%s layer corrupt, -o type=%s: exit %d, want a failure naming %s and builder check\n%s", which, typ, code, bad, out)
			}
			if _, err := os.Lstat(dest); err == nil {
				t.Errorf("%s layer corrupt, -o type=%s: %s was written", which, typ, dest)
			}
			if left, _ := filepath.Glob(dest + "*"); len(left) != 0 {
				t.Errorf("partial output left: %v", left)
			}
			// The next build fetches or rebuilds the blob.
			again := filepath.Join(outDir, which+"-"+typ+"-again.tar")
			if out, code := build("type=oci,dest=" + again); code != 0 {
				t.Fatalf("build after the failure: exit %d\n%s", code, out)
			}
			if got, _ := os.ReadFile(again); !bytes.Equal(got, want) {
				t.Errorf("%s layer corrupt, -o type=%s: the next build's archive differs from the reference", which, typ)
			}
		}
	}

	flipStoreBit(t, root, layers["base"])
	flipStoreBit(t, root, layers["built"])
	out, code := cli(t, "--root", root, "check")
	if code != 1 || !strings.Contains(out, layers["base"].String()) || !strings.Contains(out, layers["built"].String()) ||
		!strings.Contains(out, "check --repair") {
		t.Errorf("check: exit %d, want 1 naming both blobs\n%s", code, out)
	}
	out, code = cli(t, "--root", root, "check", "--repair")
	t.Logf("check --repair:\n%s", out)
	for _, w := range []string{"removed corrupt blob " + layers["base"].String(), "removed corrupt blob " + layers["built"].String(),
		"dropped cache record ", "fetched " + base + " again", "not repaired: image docker.io/library/app:latest"} {
		if !strings.Contains(out, w) {
			t.Errorf("check --repair output lacks %q", w)
		}
	}
	if code != 1 {
		t.Errorf("check --repair: exit %d, want 1 (the built image lacks its layer until rebuilt)", code)
	}
	final := filepath.Join(outDir, "final.tar")
	if out, code := build("type=oci,dest=" + final); code != 0 {
		t.Fatalf("build after repair: exit %d\n%s", code, out)
	}
	if got, _ := os.ReadFile(final); !bytes.Equal(got, want) {
		t.Error("the build after repair differs from the reference")
	}
	if out, code := cli(t, "--root", root, "check"); code != 0 {
		t.Errorf("check after the rebuild: exit %d\n%s", code, out)
	}
}

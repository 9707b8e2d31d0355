package main

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/attest"
	"builder/build/buildtest"
	"builder/internal/testenv"
)

// fakeBinfmt makes a private binfmt_misc look-alike holding handlers
// (file name → the kernel's text), so a test can take emulators away from
// builder alone (BUILDER_BINFMT_MISC) without touching the machine's.
func fakeBinfmt(t *testing.T, handlers map[string]string) string {
	dir := t.TempDir()
	files := map[string]string{"status": "enabled\n", "register": ""}
	for n, h := range handlers {
		files[n] = h
	}
	for n, data := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestCLIMultiPlatformEmulated builds a two-platform image from a
// two-platform busybox base; the arm64 RUN runs under QEMU (the machine's
// real binfmt_misc handler, which .ci/run registers with 'builder
// emulators --install'). One build writes every output type; each is
// checked per platform, the pushed index with skopeo and podman.
func TestCLIMultiPlatformEmulated(t *testing.T) {
	buildtest.RequireRoot(t)
	skopeo := testenv.RequireTool(t, "skopeo")
	podman := testenv.RequireTool(t, "podman")
	base := buildtest.MultiArchRegistry(t)
	ref := buildtest.Registry(t) + "/app:multi"
	ctxDir := writeCase(t, "FROM "+base+"\nARG TARGETARCH\nRUN uname -m > /arch && echo $TARGETARCH > /targetarch\n", map[string]string{})
	root, local, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	ociTar, dockerTar, tarOut := filepath.Join(tmp, "oci.tar"), filepath.Join(tmp, "docker.tar"), filepath.Join(tmp, "rootfs.tar")
	o, code := cli(t, "--root", root, "build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64", "-t", ref, "--push",
		"-o", "type=local,dest="+local, "-o", "type=oci,dest="+ociTar, "-o", "type=docker,dest="+dockerTar,
		"-o", "type=tar,dest="+tarOut, "-o", "type=image", ctxDir)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, o)
	}
	if !strings.Contains(o, "emulating linux/arm64 with qemu-aarch64") || strings.Contains(o, "emulating linux/amd64") {
		t.Errorf("emulation notes wrong:\n%s", o)
	}
	want := map[string]string{"amd64": "x86_64\n", "arm64": "aarch64\n"}

	// type=local: one directory per platform.
	for arch, m := range want {
		b, err := os.ReadFile(filepath.Join(local, "linux_"+arch, "arch"))
		if err != nil || string(b) != m {
			t.Errorf("local linux_%s/arch = %q, %v; want %q", arch, b, err, m)
		}
		if b, _ := os.ReadFile(filepath.Join(local, "linux_"+arch, "targetarch")); string(b) != arch+"\n" {
			t.Errorf("local linux_%s/targetarch = %q", arch, b)
		}
	}
	// type=tar: the same directories in one tar.
	files := tarFiles(t, tarOut)
	for arch, m := range want {
		if files["linux_"+arch+"/arch"] != m {
			t.Errorf("tar linux_%s/arch = %q, want %q", arch, files["linux_"+arch+"/arch"], m)
		}
	}

	// type=oci: index.json names one index of both platforms.
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xf", ociTar, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v\n%s", err, out)
	}
	lp, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, _ := lp.IndexManifest()
	if len(top.Manifests) != 1 || top.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("oci index.json: %+v", top.Manifests)
	}
	idx, err := lp.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	// --push attaches mode=min provenance by default, as buildx does: one
	// attestation manifest per image, after the images.
	images, atts := splitAttestations(im.Manifests)
	if len(images) != 2 || len(atts) != 2 {
		t.Fatalf("index has %d images and %d attestation manifests, want 2 and 2", len(images), len(atts))
	}
	for _, d := range images {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := img.ConfigFile()
		if d.Platform == nil || d.Platform.Architecture != cfg.Architecture {
			t.Errorf("descriptor platform %+v, config %s", d.Platform, cfg.Architecture)
		}
		if got := lastLayerFile(t, img, "arch"); got != want[cfg.Architecture] {
			t.Errorf("oci %s: /arch = %q, want %q", cfg.Architecture, got, want[cfg.Architecture])
		}
	}

	// type=docker: one loadable entry per platform, the tag on the host's.
	dfiles := tarFiles(t, dockerTar)
	var entries []struct {
		Config   string
		RepoTags []string
	}
	if err := json.Unmarshal([]byte(dfiles["manifest.json"]), &entries); err != nil || len(entries) != 2 {
		t.Fatalf("docker manifest.json: %v %s", err, dfiles["manifest.json"])
	}
	tagged := 0
	for _, e := range entries {
		var cfg v1.ConfigFile
		if err := json.Unmarshal([]byte(dfiles[e.Config]), &cfg); err != nil {
			t.Fatalf("docker config %s: %v", e.Config, err)
		}
		if len(e.RepoTags) > 0 {
			tagged++
			if cfg.Architecture != "amd64" {
				t.Errorf("tag on the %s entry", cfg.Architecture)
			}
		}
	}
	if tagged != 1 {
		t.Errorf("%d tagged docker entries", tagged)
	}

	// --push: the registry holds the index (skopeo reads it raw), and
	// podman pulls the arm64 image out of it.
	raw, err := exec.Command(skopeo, "inspect", "--raw", "--tls-verify=false", "docker://"+ref).Output()
	if err != nil {
		t.Fatalf("skopeo inspect --raw: %v", err)
	}
	var pushed v1.IndexManifest
	if err := json.Unmarshal(raw, &pushed); err != nil || pushed.MediaType != types.OCIImageIndex || len(pushed.Manifests) != 4 {
		t.Fatalf("pushed index: %v\n%s", err, raw)
	}
	var plats []string
	pushedImages, _ := splitAttestations(pushed.Manifests)
	for _, d := range pushedImages {
		plats = append(plats, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	if strings.Join(plats, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("pushed platforms %v", plats)
	}
	proot, err := os.MkdirTemp("", "pm") // podman wants a runroot under 50 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(proot)
	pargs := []string{"--root", filepath.Join(proot, "root"), "--runroot", filepath.Join(proot, "run"), "--storage-driver", "vfs"}
	defer exec.Command(podman, append(pargs, "rmi", "--all", "--force")...).Run()
	if out, err := exec.Command(podman, append(pargs, "pull", "-q", "--tls-verify=false", "--platform", "linux/arm64", ref)...).CombinedOutput(); err != nil {
		t.Fatalf("podman pull --platform linux/arm64: %v\n%s", err, out)
	}
	out, err := exec.Command(podman, append(pargs, "image", "inspect", "--format", "{{.Architecture}}", ref)...).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "arm64" {
		t.Errorf("podman image inspect: %v %q, want arm64", err, out)
	}

	// The store: the tag names the index; inspect and images show both
	// platforms.
	if o, code := cli(t, "--root", root, "images", "--format", "{{.Name}} {{.Platforms}}"); code != 0 || !strings.Contains(o, "linux/amd64,linux/arm64") {
		t.Errorf("images: exit %d\n%s", code, o)
	}
	if o, code := cli(t, "--root", root, "inspect", ref); code != 0 || !strings.Contains(o, "linux/arm64") {
		t.Errorf("inspect: exit %d\n%s", code, o)
	}
	// A later build takes each platform's image out of the stored index
	// (a name no registry has).
	if o, code := cli(t, "--root", root, "tag", ref, "localonly/multi:1"); code != 0 {
		t.Fatalf("tag: %s", o)
	}
	next := writeCase(t, "FROM localonly/multi:1\nRUN cp /arch /was\n", map[string]string{})
	nextOut := t.TempDir()
	if o, code := cli(t, "--root", root, "build", "--platform", "linux/amd64,linux/arm64", "-o", "type=local,dest="+nextOut, next); code != 0 {
		t.Fatalf("build FROM the stored index: exit %d\n%s", code, o)
	}
	for arch, m := range want {
		if b, err := os.ReadFile(filepath.Join(nextOut, "linux_"+arch, "was")); err != nil || string(b) != m {
			t.Errorf("FROM stored index, linux_%s/was = %q, %v; want %q", arch, b, err, m)
		}
	}
	// diff compares per platform: the stored index and the OCI archive's
	// hold the same images.
	o, code = cli(t, "--root", root, "diff", "--platform", "linux/amd64,linux/arm64", ref, "oci-archive:"+ociTar)
	if code != 0 || !strings.Contains(o, "== linux/amd64") || !strings.Contains(o, "== linux/arm64") {
		t.Errorf("diff: exit %d\n%s", code, o)
	}
}

// splitAttestations splits index entries into images and attestation
// manifests.
func splitAttestations(ms []v1.Descriptor) (images, atts []v1.Descriptor) {
	for _, m := range ms {
		if attest.IsAttestation(m) {
			atts = append(atts, m)
		} else {
			images = append(images, m)
		}
	}
	return images, atts
}

// tarFiles returns the regular files of a tar by name.
func tarFiles(t *testing.T, p string) map[string]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && h.Size < 1<<20 {
			b, _ := io.ReadAll(tr)
			out[strings.TrimPrefix(h.Name, "./")] = string(b)
		}
	}
}

// lastLayerFile returns the content of name in img's last layer.
func lastLayerFile(t *testing.T, img v1.Image, name string) string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil || len(ls) == 0 {
		t.Fatalf("layers: %v", err)
	}
	rc, err := ls[len(ls)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			return ""
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}

// TestCLIMultiPlatformCrossCompile cross-builds: the work runs in a
// FROM --platform=$BUILDPLATFORM stage, natively, with TARGETARCH telling
// it what to make. builder sees no emulator at all (an empty private
// binfmt_misc), which proves no step was emulated. A step that does not
// depend on the target runs once for both platforms; the cache exported
// with --cache-to holds both platforms' records, and a fresh store
// builds everything from it.
func TestCLIMultiPlatformCrossCompile(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.MultiArchRegistry(t)
	df := `FROM --platform=$BUILDPLATFORM ` + base + ` AS build
RUN cat /proc/sys/kernel/random/uuid > /shared
ARG TARGETARCH TARGETPLATFORM BUILDPLATFORM TARGETVARIANT
RUN echo "$TARGETARCH $TARGETPLATFORM $BUILDPLATFORM" > /out && uname -m > /ran-on
FROM scratch
COPY --from=build /out /shared /ran-on /
`
	ctxDir := writeCase(t, df, map[string]string{})
	env := []string{"BUILDER_BINFMT_MISC=" + fakeBinfmt(t, nil)}
	root, local, cacheDir := t.TempDir(), t.TempDir(), t.TempDir()
	dockerTypes := filepath.Join(t.TempDir(), "list.tar")
	o, code := cliWith(t, nil, env, "--root", root, "build", "--progress", "plain", "--platform", "linux/arm64,linux/amd64",
		"--cache-to", "type=local,dest="+cacheDir+",mode=max", "--cache-to", "type=inline", "-o", "type=local,dest="+local,
		"-o", "type=oci,dest="+dockerTypes+",oci-mediatypes=false", ctxDir)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, o)
	}
	// oci-mediatypes=false makes a Docker manifest list of Docker manifests.
	files := tarFiles(t, dockerTypes)
	var top v1.IndexManifest
	if err := json.Unmarshal([]byte(files["index.json"]), &top); err != nil || len(top.Manifests) != 1 || top.Manifests[0].MediaType != types.DockerManifestList {
		t.Fatalf("index.json %s (%v)", files["index.json"], err)
	}
	var list v1.IndexManifest
	if err := json.Unmarshal([]byte(files["blobs/sha256/"+top.Manifests[0].Digest.Hex]), &list); err != nil || len(list.Manifests) != 2 {
		t.Fatalf("manifest list: %v", err)
	}
	for _, d := range list.Manifests {
		if d.MediaType != types.DockerManifestSchema2 {
			t.Errorf("list entry %s is %s", d.Digest, d.MediaType)
		}
		// Each platform's inline cache holds its own final stage's record
		// (the COPY), not the other platform's.
		var m v1.Manifest
		json.Unmarshal([]byte(files["blobs/sha256/"+d.Digest.Hex]), &m)
		var cfg struct {
			Cache struct{ Records []json.RawMessage } `json:"builder.cache.v1"`
		}
		if err := json.Unmarshal([]byte(files["blobs/sha256/"+m.Config.Digest.Hex]), &cfg); err != nil || len(cfg.Cache.Records) != 1 {
			t.Errorf("%s: inline cache records %d (%v)", d.Platform.Architecture, len(cfg.Cache.Records), err)
		}
	}
	if strings.Contains(o, "emulating") {
		t.Errorf("a step was emulated:\n%s", o)
	}
	var shared []string
	for _, arch := range []string{"amd64", "arm64"} {
		d := filepath.Join(local, "linux_"+arch)
		out, _ := os.ReadFile(filepath.Join(d, "out"))
		if want := arch + " linux/" + arch + " linux/amd64\n"; string(out) != want {
			t.Errorf("%s: /out = %q, want %q", arch, out, want)
		}
		if on, _ := os.ReadFile(filepath.Join(d, "ran-on")); string(on) != "x86_64\n" {
			t.Errorf("%s: ran on %q", arch, on)
		}
		s, _ := os.ReadFile(filepath.Join(d, "shared"))
		shared = append(shared, string(s))
	}
	if shared[0] == "" || shared[0] != shared[1] {
		t.Errorf("the target-independent step ran twice: %q", shared)
	}
	// A fresh store builds both platforms from the exported cache alone.
	o, code = cliWith(t, nil, env, "--root", t.TempDir(), "build", "--progress", "plain", "--platform", "linux/arm64,linux/amd64",
		"--cache-from", "type=local,src="+cacheDir, ctxDir)
	if code != 0 {
		t.Fatalf("build from cache: exit %d\n%s", code, o)
	}
	if !strings.Contains(o, "8 steps, 8 cached") {
		t.Errorf("not all cached:\n%s", o)
	}
}

// TestCLIMissingEmulator takes the arm64 emulator away from builder alone
// by pointing BUILDER_BINFMT_MISC at a private binfmt_misc look-alike (the
// machine's handlers stay registered for the tests running beside it):
// the build fails before any step runs, naming the package and the
// command that fix it. A handler without the F flag is refused too.
func TestCLIMissingEmulator(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.MultiArchRegistry(t)
	noF := "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PO\noffset 0\n" +
		"magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n"
	ctxDir := writeCase(t, "FROM "+base+"\nRUN echo one > /one\nRUN uname -m\n", map[string]string{})
	for _, tc := range []struct {
		name     string
		handlers map[string]string
		want     []string
	}{
		{"none", nil, []string{"qemu-user-static", "builder emulators --install", "linux/arm64"}},
		{"disabled", map[string]string{"qemu-aarch64": strings.Replace(noF, "enabled", "disabled", 1)}, []string{"qemu-user-static"}},
		{"no F flag", map[string]string{"qemu-aarch64": noF}, []string{"no F flag", "builder emulators --install"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := []string{"BUILDER_BINFMT_MISC=" + fakeBinfmt(t, tc.handlers)}
			o, code := cliWith(t, nil, env, "--root", t.TempDir(), "build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64", ctxDir)
			if code == 0 {
				t.Fatalf("built without an emulator:\n%s", o)
			}
			for _, w := range append(tc.want, "Dockerfile:2") {
				if !strings.Contains(o, w) {
					t.Errorf("error lacks %q:\n%s", w, o)
				}
			}
			if strings.Contains(o, "] RUN") || strings.Contains(o, "] FROM") {
				t.Errorf("a step started:\n%s", o)
			}
		})
	}
	// The same Dockerfile for the host's platform alone needs no emulator.
	env := []string{"BUILDER_BINFMT_MISC=" + fakeBinfmt(t, nil)}
	if o, code := cliWith(t, nil, env, "--root", t.TempDir(), "build", "--platform", "linux/amd64", ctxDir); code != 0 {
		t.Errorf("native build: exit %d\n%s", code, o)
	}
	// A single-platform base of another platform than asked for is used
	// with a warning, but its RUN still needs its emulator: the RUN fails
	// rather than run arm64 programs unnoticed.
	armOnly := buildtest.Registry(t) + "/busybox:arm64only"
	buildtest.Push(t, armOnly, buildtest.PlatformBusyboxImage(t, "arm64"))
	wrong := writeCase(t, "FROM "+armOnly+"\nRUN uname -m\n", map[string]string{})
	o, code := cliWith(t, nil, env, "--root", t.TempDir(), "build", "--progress", "plain", "--platform", "linux/amd64", wrong)
	if code == 0 || !strings.Contains(o, "InvalidBaseImagePlatform") || !strings.Contains(o, "Dockerfile:2: RUN uname -m") ||
		!strings.Contains(o, "no emulator for linux/arm64") || !strings.Contains(o, "qemu-user-static") {
		t.Errorf("foreign single-platform base: exit %d\n%s", code, o)
	}
}

// TestCLISinglePlatformUnchanged: one platform gives a plain manifest,
// byte-identical to what builder made before multi-platform builds (the
// digest was built by the commit before them), with or without
// --platform.
func TestCLISinglePlatformUnchanged(t *testing.T) {
	buildtest.RequireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY a.txt /a.txt\nENV X=1\nCMD [\"/a.txt\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The pre-platform binary gave 29fb8173…; scratch images now carry
	// WorkingDir "/" as BuildKit's do (issue 18), which gave 1deca160…;
	// gzip layers are now members at level 1 (issue 19: docs/performance.md,
	// Compression), which changed the layer digest and so the manifest.
	const want = "sha256:548c55cd323e20abaae37b61a0a124f2db1603f18d3435ded8ef34a53a342753"
	env := []string{"SOURCE_DATE_EPOCH=1700000000"}
	for _, args := range [][]string{nil, {"--platform", "linux/amd64"}, {"--platform", "linux/x86_64,linux/amd64"}} {
		o, code := cliWith(t, nil, env, append(append([]string{"--root", t.TempDir(), "build", "-q"}, args...), dir)...)
		if code != 0 || strings.TrimSpace(o) != want {
			t.Errorf("build %v: exit %d, %q; want %s", args, code, o, want)
		}
	}
}

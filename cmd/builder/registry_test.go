package main

import (
	"archive/tar"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/build/push/registrytest"
	"builder/internal/testenv"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// tarNames lists the entry names of a tar file.
func tarNames(t *testing.T, p string) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// oneErrorLine checks a failed command: non-zero exit and exactly one
// ERROR line that contains want.
func oneErrorLine(t *testing.T, what, out string, code int, want string) {
	t.Helper()
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ERROR") {
			errs = append(errs, l)
		}
	}
	if code == 0 || len(errs) != 1 || !strings.Contains(errs[0], want) {
		t.Errorf("%s: exit %d, want one ERROR line with %q:\n%s", what, code, want, out)
	}
}

// TestCLIRegistryRoundTrip builds and pushes to an open and an htpasswd
// registry (docker-registry), reads the images back with skopeo, and
// builds FROM them in an empty store.
func TestCLIRegistryRoundTrip(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	// The registries .ci/run started for the whole run, else our own.
	open := registrytest.Shared(t, registrytest.Options{})
	authed := registrytest.Shared(t, registrytest.Options{Auth: true})
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	root := t.TempDir()
	ctxDir := writeCase(t, "FROM "+base+"\nRUN echo round-trip > /rt\n", map[string]string{})

	// Without credentials the authenticated push fails with one line.
	refA, refB := open.Repo("rt/app")+":1", authed.Repo("rt/app")+":1"
	out, code := cli(t, "--root", root, "build", "-t", refB, "--push", ctxDir)
	oneErrorLine(t, "push without login", out, code, "unauthorized")

	out, code = cli(t, "login", "-u", authed.User, "-p", "wrong", authed.Addr)
	oneErrorLine(t, "login with a wrong password", out, code, "unauthorized")
	cmd := exec.Command(binary, "login", "-u", authed.User, "--password-stdin", authed.Addr)
	cmd.Stdin = strings.NewReader(authed.Password + "\n")
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "Login Succeeded") {
		t.Fatalf("login: %v\n%s", err, b)
	}

	md := filepath.Join(t.TempDir(), "md.json")
	iid := filepath.Join(t.TempDir(), "iid")
	// One manifest digest is followed through push, skopeo, builder push
	// and pull: no provenance index (TestCLIAttestations covers that).
	out, code = cli(t, "--root", root, "build", "-t", refA, "-t", refB, "--push", "--provenance=false", "--metadata-file", md, "--iidfile", iid, ctxDir)
	if code != 0 {
		t.Fatalf("build --push: exit %d\n%s", code, out)
	}
	var meta map[string]any
	b, _ := os.ReadFile(md)
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatalf("metadata %s: %v", b, err)
	}
	digest, _ := meta["containerimage.digest"].(string)
	idb, _ := os.ReadFile(iid)
	if !strings.HasPrefix(digest, "sha256:") || string(idb) != digest || meta["image.name"] != refA+","+refB ||
		!strings.HasPrefix(meta["containerimage.config.digest"].(string), "sha256:") {
		t.Errorf("metadata %s, iid %s", b, idb)
	}
	if skopeo, ok := testenv.OptionalTool(t, "skopeo"); ok {
		for _, ref := range []string{refA, refB} {
			// skopeo reads $DOCKER_CONFIG/config.json (REGISTRY_AUTH_FILE).
			cmd := exec.Command(skopeo, "inspect", "--tls-verify=false", "docker://"+ref)
			cmd.Env = append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"))
			b, err := cmd.CombinedOutput()
			var got struct{ Digest string }
			if err != nil || json.Unmarshal(b, &got) != nil || got.Digest != digest {
				t.Errorf("skopeo inspect %s: %v\n%s", ref, err, b)
			}
		}
		// skopeo copy reads every blob of the pushed image into an OCI
		// layout, which umoci unpacks: the file the RUN wrote is there.
		layout := filepath.Join(t.TempDir(), "layout")
		cmd := exec.Command(skopeo, "copy", "--src-tls-verify=false", "docker://"+refB, "oci:"+layout+":rt")
		cmd.Env = append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("skopeo copy %s: %v\n%s", refB, err, b)
		} else if umoci, ok := testenv.OptionalTool(t, "umoci"); ok {
			bundle := filepath.Join(t.TempDir(), "bundle")
			if b, err := exec.Command(umoci, "unpack", "--image", layout+":rt", bundle).CombinedOutput(); err != nil {
				t.Errorf("umoci unpack of skopeo's copy: %v\n%s", err, b)
			} else if got, err := os.ReadFile(filepath.Join(bundle, "rootfs", "rt")); err != nil || string(got) != "round-trip\n" {
				t.Errorf("/rt in skopeo's copy = %q, %v", got, err)
			}
		}
	}

	// A build in an empty store pulls each pushed image in FROM.
	for _, ref := range []string{refA, refB} {
		next := writeCase(t, "FROM "+ref+"\nRUN cat /rt\n", map[string]string{})
		out, code := cli(t, "--root", t.TempDir(), "build", "--progress", "plain", next)
		if code != 0 || !strings.Contains(out, "round-trip") {
			t.Errorf("build FROM %s in an empty store: exit %d\n%s", ref, code, out)
		}
	}

	// builder push of a local image to a new name; pull it back.
	refC := open.Repo("rt/copy") + ":2"
	if out, code := cli(t, "--root", root, "push", refA, refC); code != 0 || !strings.Contains(out, digest) {
		t.Errorf("push: exit %d\n%s", code, out)
	}
	empty := t.TempDir()
	if out, code := cli(t, "--root", empty, "pull", refC); code != 0 || !strings.Contains(out, digest) {
		t.Errorf("pull: exit %d\n%s", code, out)
	}
	if out, _ := cli(t, "--root", empty, "images", "--format", "{{.Name}}"); !strings.Contains(out, refC) {
		t.Errorf("pulled image not listed:\n%s", out)
	}
	// Pinned: name@digest, and name:tag@digest resolves by the digest
	// (this tag does not exist).
	repoC := strings.TrimSuffix(refC, ":2")
	for _, pinned := range []string{repoC + "@" + digest, repoC + ":no-such-tag@" + digest} {
		if out, code := cli(t, "--root", t.TempDir(), "pull", pinned); code != 0 || !strings.Contains(out, digest) || strings.Contains(out, digest+"@") {
			t.Errorf("pull %s: exit %d\n%s", pinned, code, out)
		}
	}

	// Errors: unknown tag, unknown host, unknown local image.
	out, code = cli(t, "--root", empty, "pull", strings.TrimSuffix(refA, ":1")+":nope")
	oneErrorLine(t, "pull of an unknown tag", out, code, "manifest unknown")
	out, code = cli(t, "--root", empty, "pull", "no-such-host.invalid/app:1")
	oneErrorLine(t, "pull from an unknown host", out, code, "cannot resolve no-such-host.invalid")
	out, code = cli(t, "--root", empty, "push", "never-built:1")
	oneErrorLine(t, "push of an unknown image", out, code, "not in the local store")

	if out, code := cli(t, "logout", authed.Addr); code != 0 {
		t.Errorf("logout: exit %d\n%s", code, out)
	}
	out, code = cli(t, "--root", t.TempDir(), "pull", refB)
	oneErrorLine(t, "pull after logout", out, code, "unauthorized")
	if m := buildtest.Mounts(t, root); len(m) > 0 {
		t.Errorf("mounts left: %q", m)
	}
}

// TestCLIOutputs checks every output type with a reader other than builder
// where there is one.
func TestCLIOutputs(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	dir := t.TempDir()
	ctxDir := writeCase(t, "FROM "+base+"\nRUN echo out > /out && rm /bin/ls\n", map[string]string{})
	p := func(n string) string { return filepath.Join(dir, n) }
	out, code := cli(t, "--root", root, "build", "-t", "outs:1",
		"-o", "type=oci,dest="+p("oci.tar"),
		"-o", "type=oci,dest="+p("layout")+",tar=false,compression=gzip,compression-level=1,force-compression=true",
		"-o", "type=oci,dest="+p("zstd.tar")+",compression=zstd,compression-level=3",
		"-o", "type=docker,dest="+p("docker.tar"),
		"-o", "type=local,dest="+p("rootfs"),
		"-o", "type=tar,dest="+p("fs.tar"),
		"-o", "type=image,name=outs:uncompressed,compression=uncompressed,oci-mediatypes=false",
		ctxDir)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	// local: the final root filesystem, the deleted file absent.
	if b, err := os.ReadFile(p("rootfs/out")); err != nil || string(b) != "out\n" {
		t.Errorf("rootfs/out = %q, %v", b, err)
	}
	if _, err := os.Lstat(p("rootfs/bin/ls")); !os.IsNotExist(err) {
		t.Errorf("rootfs/bin/ls: %v, want it deleted", err)
	}
	// tar: the same tree as one tar.
	names := tarNames(t, p("fs.tar"))
	sort.Strings(names)
	if i := sort.SearchStrings(names, "out"); i == len(names) || names[i] != "out" || contains(names, "bin/ls") || !contains(names, "bin/busybox") {
		t.Errorf("fs.tar entries: %v", names)
	}
	for _, n := range names {
		if strings.Contains(n, ".wh.") {
			t.Errorf("fs.tar has whiteout %s", n)
		}
	}
	// oci: umoci unpacks it.
	if umoci, ok := testenv.OptionalTool(t, "umoci"); ok {
		layout := p("oci-layout")
		os.MkdirAll(layout, 0o755)
		if b, err := exec.Command("tar", "-xf", p("oci.tar"), "-C", layout).CombinedOutput(); err != nil {
			t.Fatalf("untar: %v\n%s", err, b)
		}
		for _, src := range []string{layout + ":1", p("layout") + ":1"} {
			bundle := filepath.Join(t.TempDir(), "bundle")
			b, err := exec.Command(umoci, "unpack", "--image", src, bundle).CombinedOutput()
			if err != nil {
				t.Errorf("umoci unpack %s: %v\n%s", src, err, b)
				continue
			}
			if got, _ := os.ReadFile(filepath.Join(bundle, "rootfs/out")); string(got) != "out\n" {
				t.Errorf("%s: rootfs/out = %q", src, got)
			}
		}
	}
	// compression=zstd: every layer, the base image's too.
	if skopeo, ok := testenv.OptionalTool(t, "skopeo"); ok {
		b, err := exec.Command(skopeo, "inspect", "--raw", "--tmpdir", t.TempDir(), "oci-archive:"+p("zstd.tar")).Output()
		var got struct {
			Layers []struct{ MediaType string }
		}
		if err != nil || json.Unmarshal(b, &got) != nil || len(got.Layers) != 2 {
			t.Fatalf("skopeo inspect zstd.tar: %v\n%s", err, b)
		}
		for _, l := range got.Layers {
			if l.MediaType != "application/vnd.oci.image.layer.v1.tar+zstd" {
				t.Errorf("zstd.tar layer type %s", l.MediaType)
			}
		}
	}
	// docker: loads back into a fresh store under its tag.
	other := t.TempDir()
	if out, code := cli(t, "--root", other, "load", "-i", p("docker.tar")); code != 0 || !strings.Contains(out, "Loaded image: docker.io/library/outs:1") {
		t.Errorf("load: exit %d\n%s", code, out)
	}
	// save --format oci of the uncompressed docker-typed variant, then load.
	if out, code := cli(t, "--root", root, "save", "--format", "oci", "-o", p("saved.tar"), "outs:uncompressed"); code != 0 {
		t.Fatalf("save: exit %d\n%s", code, out)
	}
	if out, code := cli(t, "--root", other, "load", "-i", p("saved.tar")); code != 0 || !strings.Contains(out, "outs:uncompressed") {
		t.Errorf("load saved: exit %d\n%s", code, out)
	}
	if out, _ := cli(t, "--root", other, "images", "--format", "{{.Name}}"); !strings.Contains(out, "outs:1") || !strings.Contains(out, "outs:uncompressed") {
		t.Errorf("images after load:\n%s", out)
	}
	// Bad outputs are usage errors.
	for _, o := range []string{"type=local", "type=oci,dest=x,compression=lz4", "type=tar,dest=x,name=y", "type=local,dest=-", "type=registry"} {
		if out, code := cli(t, "--root", root, "build", "-o", o, ctxDir); code != 2 {
			t.Errorf("-o %s: exit %d, want 2\n%s", o, code, out)
		}
	}
}

// TestCLIRegistryConfig pulls docker.io/library/busybox through a loopback
// mirror named in --registry-config (or BUILDER_REGISTRY_CONFIG), past a
// dead one; a broken or missing file is one clear error.
func TestCLIRegistryConfig(t *testing.T) {
	mirror := buildtest.Registry(t)
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	buildtest.Push(t, mirror+"/library/busybox:latest", img)
	want, _ := img.Digest()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	tmpl, err := os.ReadFile("testdata/registries-mirror.toml.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "registries.toml")
	text := strings.NewReplacer("DEAD", dead, "MIRROR", mirror).Replace(string(tmpl))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())

	root := t.TempDir()
	out, code := cli(t, "--root", root, "--registry-config", cfg, "pull", "busybox")
	if code != 0 || !strings.Contains(out, want.String()) || !strings.Contains(out, "mirror "+dead+": connection refused") {
		t.Fatalf("pull through a mirror: exit %d\n%s", code, out)
	}
	if out, _ := cli(t, "--root", root, "images"); !strings.Contains(out, "docker.io/library/busybox") && !strings.Contains(out, "busybox") {
		t.Errorf("pulled image not listed:\n%s", out)
	}
	// The environment variable names the file too.
	t.Setenv("BUILDER_REGISTRY_CONFIG", cfg)
	if out, code := cli(t, "--root", t.TempDir(), "pull", "-q", "docker.io/library/busybox:latest"); code != 0 || !strings.Contains(out, want.String()) {
		t.Errorf("pull with BUILDER_REGISTRY_CONFIG: exit %d\n%s", code, out)
	}

	out, code = cli(t, "--root", root, "--registry-config", "testdata/registries-bad.toml", "pull", "busybox")
	oneErrorLine(t, "a misspelt key", out, code, `registries-bad.toml: unknown key registry."docker.io".mirror`)
	t.Setenv("BUILDER_REGISTRY_CONFIG", filepath.Join(t.TempDir(), "none.toml"))
	out, code = cli(t, "--root", root, "pull", "busybox")
	oneErrorLine(t, "a missing file", out, code, "read registry config")
}

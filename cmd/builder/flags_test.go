package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/build/progress/progresstest"
)

// TestCLIBuildxFlags builds one real image with the buildx flags that
// change what RUN sees or what the build writes, and checks each effect:
// --add-host in /etc/hosts, --ulimit by `ulimit -n`, --shm-size by `df
// /dev/shm`, --annotation and --metadata-file/--iidfile against the
// manifest skopeo reads from the OCI archive, --progress=rawjson (from
// BUILDKIT_PROGRESS) through a reader of buildx's schema; then
// --no-cache-filter re-runs only the stage it names, and --pull=never
// fails on a base image the store lacks.
func TestCLIBuildxFlags(t *testing.T) {
	buildtest.RequireRoot(t)
	skopeo := buildtest.RequireTool(t, "skopeo")
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	work := t.TempDir()
	ctx := writeCase(t, "FROM "+base+" AS base\n"+
		"RUN cat /etc/hosts > /hosts.txt && ulimit -n > /nofile.txt && ulimit -Hn > /nofile-hard.txt && df -k /dev/shm | tail -n 1 > /shm.txt\n"+
		"FROM base AS other\n"+
		"RUN echo \"other $RANDOM $$\" > /stamp\n"+
		"FROM base\n"+
		"COPY --from=other /stamp /stamp\n"+
		"RUN echo final; echo to-stderr >&2\n", map[string]string{})
	out := filepath.Join(work, "out")
	archive := filepath.Join(work, "app.oci.tar")
	meta := filepath.Join(work, "meta.json")
	iid := filepath.Join(work, "iid")
	build := func(root string, extra ...string) (string, int) {
		cmd := exec.Command(binary, append([]string{"--root", root, "build"}, extra...)...)
		cmd.Env = append(os.Environ(), "BUILDKIT_PROGRESS=rawjson")
		b, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(b) + string(ee.Stderr), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(b), 0
	}
	// The rawjson stream goes to stderr; capture it apart from stdout.
	rawBuild := func(extra ...string) *progresstest.Graph {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"--root", root, "build"}, extra...)...)
		cmd.Env = append(os.Environ(), "BUILDKIT_PROGRESS=rawjson")
		stderr, err := os.CreateTemp(work, "stderr")
		if err != nil {
			t.Fatal(err)
		}
		defer stderr.Close()
		cmd.Stderr = stderr
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(stderr.Name())
			t.Fatalf("build %v: %v\n%s", extra, err, b)
		}
		if _, err := stderr.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		st, err := progresstest.ReadRawJSON(stderr)
		if err != nil {
			t.Fatal(err)
		}
		return progresstest.Collect(st)
	}

	g := rawBuild("-t", "app:1", "--load", "--pull",
		"--add-host", "db.internal:10.1.2.3", "--add-host", "v6.internal=[fd00::1]",
		"--ulimit", "nofile=512:1024", "--shm-size", "32m",
		"--annotation", "org.example.note=hello", "--annotation", "manifest:org.example.second=two",
		"--metadata-file", meta, "--iidfile", iid,
		"-o", "type=local,dest="+out, "-o", "type=oci,dest="+archive, ctx)

	for _, c := range []struct{ file, want string }{
		{"hosts.txt", "10.1.2.3\tdb.internal\n"},
		{"hosts.txt", "fd00::1\tv6.internal\n"},
		{"nofile.txt", "512\n"},
		{"nofile-hard.txt", "1024\n"},
		{"shm.txt", " 32768 "},
	} {
		b, err := os.ReadFile(filepath.Join(out, c.file))
		if err != nil || !strings.Contains(string(b), c.want) {
			t.Errorf("/%s = %q (%v), want it to contain %q", c.file, b, err, c.want)
		}
	}

	// The manifest as skopeo reads it from the archive.
	raw, err := exec.Command(skopeo, "inspect", "--raw", "oci-archive:"+archive).Output()
	if err != nil {
		t.Fatalf("skopeo inspect: %v", err)
	}
	sum := sha256.Sum256(raw)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	var manifest struct {
		MediaType   string
		Config      struct{ Digest string }
		Annotations map[string]string
	}
	if err := json.Unmarshal(raw, &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.Annotations["org.example.note"] != "hello" || manifest.Annotations["org.example.second"] != "two" {
		t.Errorf("manifest annotations %v", manifest.Annotations)
	}
	var md map[string]any
	b, err := os.ReadFile(meta)
	if err == nil {
		err = json.Unmarshal(b, &md)
	}
	if err != nil {
		t.Fatalf("metadata file: %v", err)
	}
	desc, _ := md["containerimage.descriptor"].(map[string]any)
	if md["containerimage.digest"] != digest || md["containerimage.config.digest"] != manifest.Config.Digest ||
		desc["digest"] != digest || desc["size"] != float64(len(raw)) || desc["mediaType"] != manifest.MediaType ||
		!strings.Contains(md["image.name"].(string), "app:1") || !strings.HasPrefix(md["buildx.build.ref"].(string), "builder/local/") {
		t.Errorf("metadata %s does not match the manifest %s (%s)", b, digest, raw)
	}
	if b, _ := os.ReadFile(iid); string(b) != digest {
		t.Errorf("iidfile %q, want %q", b, digest)
	}

	// rawjson: every step is a vertex that completed; the RUN's output is
	// its log.
	run := g.Find("RUN echo final")
	if run == nil || run.Completed == nil || run.Cached || run.Error != "" {
		t.Fatalf("rawjson: no completed vertex for the last RUN: %+v", g.Order)
	}
	if cp := g.Find("COPY --from=other"); cp == nil || len(run.Inputs) != 1 || run.Inputs[0] != cp.Digest {
		t.Errorf("rawjson: the last RUN's inputs %v are not the COPY before it", run.Inputs)
	}
	if logs := g.Logs[run.Digest]; !strings.Contains(logs, "final\n") || !strings.Contains(logs, "to-stderr\n") {
		t.Errorf("rawjson logs of the last RUN: %q", logs)
	}

	// Again with --no-cache-filter other: base's RUN is cached, other's is
	// not; the vertex digests are the same as the first build's.
	g2 := rawBuild("-t", "app:2", "--add-host", "db.internal:10.1.2.3", "--add-host", "v6.internal=[fd00::1]",
		"--ulimit", "nofile=512:1024", "--shm-size", "32m", "--no-cache-filter", "other", ctx)
	baseRun, otherRun := g2.Find("RUN cat /etc/hosts"), g2.Find("RUN echo \"other")
	if baseRun == nil || !baseRun.Cached || otherRun == nil || otherRun.Cached || otherRun.Completed == nil {
		t.Errorf("--no-cache-filter other: base RUN %+v, other RUN %+v", baseRun, otherRun)
	}
	if first := g.Find("RUN cat /etc/hosts"); first == nil || baseRun == nil || first.Digest != baseRun.Digest {
		t.Errorf("vertex digest of the same step changed between builds")
	}

	// A failing step: its vertex carries the error.
	bad := writeCase(t, "FROM "+base+"\nRUN echo about-to-fail && exit 3\n", map[string]string{})
	cmd := exec.Command(binary, "--root", root, "build", "--progress=rawjson", bad)
	stderr, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("failing build exit %d", cmd.ProcessState.ExitCode())
	}
	var lines []string
	for _, l := range strings.Split(string(stderr), "\n") {
		if strings.HasPrefix(l, "{") {
			lines = append(lines, l)
		}
	}
	st, err := progresstest.ReadRawJSON(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	gf := progresstest.Collect(st)
	if v := gf.Find("RUN echo about-to-fail"); v == nil || v.Error == "" || v.Completed == nil ||
		!strings.Contains(gf.Logs[v.Digest], "about-to-fail\n") {
		t.Errorf("failing vertex %+v, logs %q", v, gf.Logs)
	}
	if v := gf.Find("FROM "); v == nil || !v.Cached && v.Completed == nil {
		t.Errorf("FROM vertex %+v", v)
	}

	// A limit the kernel refuses fails the RUN with the limit's name; a
	// --no-cache-filter that names no stage fails before any step.
	if out, code := build(root, "--no-cache", "--ulimit", "nofile=4294967296", ctx); code != 1 || !strings.Contains(out, "set ulimit nofile=4294967296:4294967296") {
		t.Errorf("--ulimit nofile=4294967296: exit %d\n%s", code, out)
	}
	if out, code := build(root, "--no-cache-filter", "nosuch", ctx); code != 1 || !strings.Contains(out, `--no-cache-filter "nosuch" names no stage; stages: 0, base, 1, other, 2`) {
		t.Errorf("--no-cache-filter nosuch: exit %d\n%s", code, out)
	}

	// --pull=never on a store without the base image.
	if out, code := build(t.TempDir(), "--pull=never", ctx); code != 1 || !strings.Contains(out, "--pull=never") {
		t.Errorf("--pull=never without the image: exit %d\n%s", code, out)
	}
}

// TestCLISyntaxAndWarnings builds a Dockerfile whose # syntax= names a
// frontend builder cannot run: it builds with a warning, or fails at line 1
// under BUILDER_STRICT_SYNTAX=1 before anything runs. The build checks'
// warnings are summarised after the build, as buildx does, without failing
// it; # check=error=true fails it.
func TestCLISyntaxAndWarnings(t *testing.T) {
	buildtest.RequireRoot(t)
	root := t.TempDir()
	ctx := writeCase(t, "# syntax=example.com/my/frontend:2\nFROM scratch as Final\nCOPY a.txt /a.txt\nCMD run\n", map[string]string{"a.txt": "a\n"})
	out, code := cli(t, "--root", root, "build", "--progress=plain", ctx)
	if code != 0 || !strings.Contains(out, "WARNING: Dockerfile:1: # syntax=example.com/my/frontend:2: frontend not supported, building as a plain Dockerfile") ||
		!strings.Contains(out, "3 warnings found") || !strings.Contains(out, " - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)") ||
		!strings.Contains(out, " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 4)") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	cmd := exec.Command(binary, "--root", root, "build", "--progress=plain", ctx)
	cmd.Env = append(os.Environ(), "BUILDER_STRICT_SYNTAX=1")
	b, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(b), "ERROR: Dockerfile:1: # syntax=example.com/my/frontend:2: unsupported # syntax= frontend") ||
		strings.Count(string(b), "COPY a.txt") > 1 { // once in the snippet; the step never runs
		t.Errorf("strict: exit %d:\n%s", cmd.ProcessState.ExitCode(), b)
	}
	strict := writeCase(t, "# check=error=true\nFROM scratch as final\nCOPY a.txt /a.txt\n", map[string]string{"a.txt": "a\n"})
	if out, code := cli(t, "--root", root, "build", "--progress=plain", strict); code != 1 ||
		!strings.Contains(out, "lint violation found for rules: FromAsCasing") {
		t.Errorf("check=error=true: exit %d:\n%s", code, out)
	}
	// CopyIgnoredFile needs the context: a build runs it before any step.
	ignored := writeCase(t, "# check=error=true\nFROM scratch\nCOPY app.key /t\n",
		map[string]string{"app.key": "k\n", ".dockerignore": "*.key\n"})
	if out, code := cli(t, "--root", root, "build", "--progress=plain", ignored); code != 1 ||
		!strings.Contains(out, "lint violation found for rules: CopyIgnoredFile") ||
		!strings.Contains(out, ` - CopyIgnoredFile: Attempting to Copy file "app.key" that is excluded by .dockerignore (line 3)`) {
		t.Errorf("CopyIgnoredFile: exit %d:\n%s", code, out)
	}
}

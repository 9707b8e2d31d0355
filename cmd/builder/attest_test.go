package main

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"builder/build/attest"
	"builder/build/buildtest"
	"builder/build/push/registrytest"
	"builder/internal/gitserver"
	"builder/internal/testenv"
)

// attestDockerfile is a multi-stage build with an ADD URL (PORT), a secret
// mount and args, some of them secret-like: what provenance must name and
// what it must never show. It is the Dockerfile BuildKit's provenance was
// captured for (TestBuildKitProvenance).
var attestDockerfile = filepath.Join("..", "..", "build", "attest", "testdata", "buildkit", "Dockerfile")

// leaks are the values provenance must never contain.
var leaks = []string{"ghp-attest-token", "proxy-pass", "secret-value"}

// TestCLIAttestations builds with provenance and pushes it to a registry
// with the referrers API (go-containerregistry's) and one without
// (docker-registry, which gets the sha256-<hex> tag fallback), then reads
// it back: the index entry and the referrer with go-containerregistry,
// `builder inspect --attestations`, skopeo (copies the index with the
// attestation manifest) and oras discover. Also the defaults: mode=min when
// pushing, none with --provenance=false or BUILDX_NO_DEFAULT_ATTESTATIONS.
func TestCLIAttestations(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	baseRef, _ := name.ParseReference(base, name.Insecure)
	baseDesc, err := remote.Get(baseRef)
	if err != nil {
		t.Fatal(err)
	}
	const body = "attested file\n"
	port := buildtest.LoopbackServer(t, body)
	bodySum, _, _ := v1.SHA256(strings.NewReader(body))
	df, err := os.ReadFile(attestDockerfile)
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := strings.ReplaceAll(string(df), "PORT", strconv.Itoa(port))
	ctxDir := writeCase(t, dockerfile, map[string]string{})
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv("TOK", "secret-value")
	root := t.TempDir()
	build := func(t *testing.T, ref string, extra ...string) string {
		t.Helper()
		args := append([]string{"--root", root, "build", "-t", ref, "--build-arg", "BASE=" + base,
			"--build-arg", "VERSION=1.2.3", "--build-arg", "GITHUB_TOKEN=ghp-attest-token",
			"--build-arg", "HTTP_PROXY=http://u:proxy-pass@proxy.invalid", "--secret", "id=tok,env=TOK"}, extra...)
		out, code := cli(t, append(args, ctxDir)...)
		if code != 0 {
			t.Fatalf("build %v: exit %d\n%s", extra, code, out)
		}
		return out
	}

	for _, reg := range []struct{ name, addr string }{
		{"referrers-api", buildtest.Registry(t)},
		{"tag-fallback", registrytest.Shared(t, registrytest.Options{}).Repo("attest")},
	} {
		t.Run(reg.name, func(t *testing.T) {
			ref := reg.addr + "/app:max"
			build(t, ref, "--push", "--provenance", "mode=max")
			img, idx := pushedIndex(t, ref)
			prov := referredProvenance(t, ref, img)
			checkProvenance(t, prov, base, baseDesc.Digest, port, bodySum, dockerfile)
			if got := indexProvenance(t, ref, idx, img); string(got) != string(prov) {
				t.Errorf("the index's attestation differs from the referrer's")
			}
			out, code := cli(t, "--root", root, "inspect", "--attestations", "-f", "{{json .Provenance}}", "docker://"+ref)
			if code != 0 || !strings.Contains(out, `"buildType":"`+attest.BuildType) {
				t.Errorf("inspect --attestations docker://: exit %d\n%s", code, out)
			}
			skopeoCopy(t, ref)
			if oras := os.Getenv("BUILDER_TEST_ORAS"); oras != "" || testenv.Required() {
				orasDiscover(t, oras, ref, img)
			}
		})
	}

	// Each case pushes the same image, so each gets a registry of its own
	// to count the referrers of that image.
	t.Run("defaults", func(t *testing.T) {
		// --push alone: mode=min provenance, without build args.
		ref := buildtest.Registry(t) + "/app:default"
		build(t, ref, "--push")
		img, _ := pushedIndex(t, ref)
		var p attest.Provenance
		if err := json.Unmarshal(referredProvenance(t, ref, img), &p); err != nil {
			t.Fatal(err)
		}
		if p.BuildDefinition.ExternalParameters.Request.Args != nil || p.RunDetails.Metadata.BuildKit.Source != nil {
			t.Errorf("default provenance is not mode=min: %+v", p)
		}
		for _, tc := range []struct {
			name string
			env  string
			args []string
		}{
			{"provenance-false", "", []string{"--provenance=false", "--sbom=false"}},
			{"attest-disabled", "", []string{"--attest", "type=provenance,disabled=true"}},
			{"no-default", "1", nil},
		} {
			t.Setenv("BUILDX_NO_DEFAULT_ATTESTATIONS", tc.env)
			ref := buildtest.Registry(t) + "/app:" + tc.name
			build(t, ref, append([]string{"--push"}, tc.args...)...)
			r, _ := name.ParseReference(ref, name.Insecure)
			d, err := remote.Get(r)
			if err != nil || d.MediaType.IsIndex() {
				t.Errorf("%s: pushed %v, %v; want a bare image manifest", tc.name, d.MediaType, err)
				continue
			}
			if refs := referrers(t, r.Context().Digest(d.Digest.String())); len(refs) != 0 {
				t.Errorf("%s: %d referrers", tc.name, len(refs))
			}
		}
		t.Setenv("BUILDX_NO_DEFAULT_ATTESTATIONS", "")
	})

	t.Run("referrers-only", func(t *testing.T) {
		ref := buildtest.Registry(t) + "/app:referrers"
		build(t, ref, "--push", "--provenance=true", "--attest-store", "referrers")
		r, _ := name.ParseReference(ref, name.Insecure)
		d, err := remote.Get(r)
		if err != nil || d.MediaType.IsIndex() {
			t.Fatalf("pushed %v, %v: want the image manifest alone, no unknown/unknown entry", d.MediaType, err)
		}
		referredProvenance(t, ref, d.Digest)
	})

	t.Run("store-and-oci", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "app.tar")
		build(t, "attest/local:1", "--provenance", "mode=max", "-o", "type=oci,dest="+dest)
		out, code := cli(t, "--root", root, "inspect", "--attestations", "-f", "{{json .Provenance}}", "attest/local:1")
		if code != 0 || !strings.Contains(out, `"build-arg:VERSION":"1.2.3"`) {
			t.Errorf("inspect --attestations of the stored image: exit %d\n%s", code, out)
		}
		for _, l := range leaks {
			if strings.Contains(out, l) {
				t.Errorf("the stored provenance contains %q", l)
			}
		}
		// The archive's index.json names an index: the image and its
		// attestation manifest.
		top := ociArchiveIndex(t, dest)
		if len(top.Manifests) != 2 || !attest.IsAttestation(top.Manifests[1]) || top.Manifests[1].Platform.OS != "unknown" {
			t.Errorf("the OCI archive's image index = %+v", top.Manifests)
		}
		// Prune keeps the attestations of a tagged image.
		if out, code := cli(t, "--root", root, "prune", "-a"); code != 0 {
			t.Fatalf("prune: %s", out)
		}
		if out, code := cli(t, "--root", root, "check"); code != 0 {
			t.Errorf("check after prune: exit %d\n%s", code, out)
		}
		if out, code := cli(t, "--root", root, "inspect", "--attestations", "attest/local:1"); code != 0 || !strings.Contains(out, attest.PredicateSLSA1) {
			t.Errorf("attestations after prune: exit %d\n%s", code, out)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"--provenance", "mode=most"}, {"--provenance", "version=v0.2"}, {"--attest", "type=vex"},
			{"--attest-store", "nowhere"}, {"--sbom", "colour=red"}, {"--provenance", "colour=red"},
		} {
			out, code := cli(t, append(append([]string{"--root", root, "build"}, args...), ctxDir)...)
			if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("build %v: exit %d, want 2 and one line:\n%s", args, code, out)
			}
		}
	})
}

// pushedIndex checks that ref is an image index of one image and its
// attestation manifest, as BuildKit pushes it, and returns both.
func pushedIndex(t *testing.T, ref string) (v1.Hash, *v1.IndexManifest) {
	t.Helper()
	r, _ := name.ParseReference(ref, name.Insecure)
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatalf("%s is not an index: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 || im.Manifests[0].Platform == nil || im.Manifests[0].Platform.OS != "linux" {
		t.Fatalf("index of %s = %+v", ref, im.Manifests)
	}
	a := im.Manifests[1]
	if !attest.IsAttestation(a) || a.Annotations[attest.AnnotationReferenceDigest] != im.Manifests[0].Digest.String() ||
		a.Platform == nil || a.Platform.OS != "unknown" || a.Platform.Architecture != "unknown" {
		t.Errorf("attestation entry = %+v", a)
	}
	return im.Manifests[0].Digest, im
}

// referrers lists the referrers of d with remote.Referrers.
func referrers(t *testing.T, d name.Digest) []v1.Descriptor {
	t.Helper()
	idx, err := remote.Referrers(d)
	if err != nil {
		t.Fatalf("referrers of %s: %v", d, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return im.Manifests
}

// referredProvenance finds the attestation manifest among the referrers
// of the image and returns its provenance predicate.
func referredProvenance(t *testing.T, ref string, img v1.Hash) json.RawMessage {
	t.Helper()
	r, _ := name.ParseReference(ref, name.Insecure)
	var found []v1.Descriptor
	for _, d := range referrers(t, r.Context().Digest(img.String())) {
		if d.ArtifactType == attest.ArtifactType {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d attestation referrers of %s, want 1", len(found), img)
	}
	return provenanceIn(t, r.Context(), found[0].Digest)
}

// indexProvenance returns the provenance of the index's attestation entry.
func indexProvenance(t *testing.T, ref string, im *v1.IndexManifest, img v1.Hash) json.RawMessage {
	t.Helper()
	r, _ := name.ParseReference(ref, name.Insecure)
	return provenanceIn(t, r.Context(), im.Manifests[1].Digest)
}

// provenanceIn reads the SLSA predicate of attestation manifest d.
func provenanceIn(t *testing.T, repo name.Repository, d v1.Hash) json.RawMessage {
	t.Helper()
	desc, err := remote.Get(repo.Digest(d.String()))
	if err != nil {
		t.Fatal(err)
	}
	stmts, err := attest.ReadStatements(desc.Manifest, func(l v1.Descriptor) ([]byte, error) {
		layer, err := remote.Layer(repo.Digest(l.Digest.String()))
		if err != nil {
			return nil, err
		}
		rc, err := layer.Compressed()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	})
	if err != nil || len(stmts) != 1 || stmts[0].PredicateType != attest.PredicateSLSA1 {
		t.Fatalf("statements of %s: %+v, %v", d, stmts, err)
	}
	return stmts[0].Predicate
}

// checkProvenance checks a mode=max provenance of attestDockerfile.
func checkProvenance(t *testing.T, raw json.RawMessage, base string, baseDigest v1.Hash, port int, bodySum v1.Hash, dockerfile string) {
	t.Helper()
	for _, l := range leaks {
		if strings.Contains(string(raw), l) {
			t.Errorf("provenance contains %q", l)
		}
	}
	for _, k := range []string{"build-arg:GITHUB_TOKEN", "build-arg:HTTP_PROXY"} {
		if strings.Contains(string(raw), k) {
			t.Errorf("provenance names %s", k)
		}
	}
	var p attest.Provenance
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	basePURL, _ := attest.ImagePURL("docker", base, &v1.Platform{OS: "linux", Architecture: hostArch()})
	want := map[string]string{
		basePURL: baseDigest.Hex,
		"http://127.0.0.1:" + strconv.Itoa(port) + "/file.txt": bodySum.Hex,
	}
	deps := p.BuildDefinition.ResolvedDependencies
	if len(deps) != len(want) {
		t.Errorf("resolvedDependencies = %+v, want %v", deps, want)
	}
	for _, d := range deps {
		if want[d.URI] == "" || d.Digest["sha256"] != want[d.URI] {
			t.Errorf("dependency %+v, want one of %v", d, want)
		}
	}
	req := p.BuildDefinition.ExternalParameters.Request
	if req.Args["build-arg:VERSION"] != "1.2.3" || req.Args["build-arg:BASE"] != base || len(req.Secrets) != 1 || req.Secrets[0].ID != "tok" {
		t.Errorf("request = %+v", req)
	}
	src := p.RunDetails.Metadata.BuildKit.Source
	if src == nil || len(src.Infos) != 1 || string(src.Infos[0].Data) != dockerfile {
		t.Errorf("mode=max lacks the Dockerfile: %+v", src)
	}
	// Every instruction of both stages, the COPY after the second FROM.
	bc := p.BuildDefinition.InternalParameters.BuildConfig
	if bc == nil || len(bc.Definition) != 7 || bc.Definition[6].Inputs[0] != "step5:0" || !strings.HasPrefix(bc.Definition[4].Name, "RUN ") {
		t.Errorf("steps: %+v", bc)
	}
	layers := p.RunDetails.Metadata.BuildKit.Layers
	if len(layers) == 0 {
		t.Errorf("mode=max has no layers")
	}
	if md := p.RunDetails.Metadata; md.StartedOn == nil || md.FinishedOn == nil || md.FinishedOn.Before(*md.StartedOn) || len(md.InvocationID) != 25 {
		t.Errorf("run metadata = %+v", md)
	}
}

// skopeoCopy copies the index with every manifest into an OCI layout and
// checks that the attestation manifest came along.
func skopeoCopy(t *testing.T, ref string) {
	t.Helper()
	skopeoCopyAll(t, ref, 1)
}

// skopeoCopyAll copies the index of images images and their attestation
// manifests (after them, one each) into an OCI layout and checks that
// every manifest came along.
func skopeoCopyAll(t *testing.T, ref string, images int) {
	t.Helper()
	skopeo := testenv.RequireTool(t, "skopeo")
	layout := filepath.Join(t.TempDir(), "layout")
	if out, err := exec.Command(skopeo, "copy", "--all", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":x").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var top v1.IndexManifest
	if err := json.Unmarshal(b, &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("skopeo's index.json: %s", b)
	}
	b, err = os.ReadFile(filepath.Join(layout, "blobs", "sha256", top.Manifests[0].Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 2*images {
		t.Fatalf("skopeo's copy of the index: %s", b)
	}
	for i, m := range idx.Manifests[images:] {
		if !attest.IsAttestation(m) || m.Annotations[attest.AnnotationReferenceDigest] != idx.Manifests[i].Digest.String() {
			t.Errorf("skopeo's copy: entry %d is not the attestation manifest of %s: %+v", images+i, idx.Manifests[i].Digest, m)
		}
	}
	for _, m := range idx.Manifests {
		if _, err := os.Stat(filepath.Join(layout, "blobs", "sha256", m.Digest.Hex)); err != nil {
			t.Errorf("skopeo did not copy manifest %s: %v", m.Digest, err)
		}
	}
}

// orasDiscover lists the referrers of the image with the oras CLI.
func orasDiscover(t *testing.T, oras, ref string, img v1.Hash) {
	t.Helper()
	if oras == "" {
		t.Fatal("BUILDER_TEST_ORAS is not set (.ci/run builds oras from the Go module proxy)")
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	out, err := exec.Command(oras, "discover", "--plain-http", "--format", "json", r.Context().Digest(img.String()).String()).CombinedOutput()
	if err != nil {
		t.Fatalf("oras discover: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), attest.ArtifactType) {
		t.Errorf("oras discover does not list the attestation manifest:\n%s", out)
	}
}

// ociArchiveIndex reads the image index index.json of an OCI archive names.
func ociArchiveIndex(t *testing.T, path string) *v1.IndexManifest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && h.Size < 1<<20 {
			blobs[h.Name], _ = io.ReadAll(tr)
		}
	}
	var top v1.IndexManifest
	if err := json.Unmarshal(blobs["index.json"], &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json: %s, %v", blobs["index.json"], err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(blobs["blobs/sha256/"+top.Manifests[0].Digest.Hex], &idx); err != nil {
		t.Fatalf("image index: %v", err)
	}
	return &idx
}

// TestCLIProvenanceGitContext: the provenance of a build whose context is
// a Git URL names the repository and the commit its ref resolved to as the
// configSource, a resolved dependency and the vcs metadata, as BuildKit
// does, with the URL's credentials masked everywhere.
func TestCLIProvenanceGitContext(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	srv := gitserver.Start(t)
	repo := srv.Repo(t, "ctx")
	first := repo.Commit("one", map[string]string{"Dockerfile": "ARG BASE\nFROM $BASE\nCOPY f.txt /\n", "f.txt": "v1\n"})
	repo.Git("tag", "v1")
	repo.Commit("two", map[string]string{"f.txt": "v2\n"})
	repo.Push()
	const token = "ghp-context-token"
	u := strings.Replace(srv.HTTPURL, "http://", "http://user:"+token+"@", 1) + "/ctx.git#v1"
	root := t.TempDir()
	if out, code := cli(t, "--root", root, "build", "-t", "attest/git:1", "--provenance", "mode=max",
		"--build-arg", "BASE="+base, u); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	out, code := cli(t, "--root", root, "inspect", "--attestations", "-f", "{{json .Provenance}}", "attest/git:1")
	if code != 0 {
		t.Fatalf("inspect --attestations: exit %d\n%s", code, out)
	}
	if strings.Contains(out, token) || strings.Contains(out, "user:") {
		t.Errorf("provenance shows the context URL's credentials:\n%s", out)
	}
	var p attest.Provenance
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := strings.Replace(srv.HTTPURL, "http://", "http://xxxxx:xxxxx@", 1) + "/ctx.git#v1"
	cs := p.BuildDefinition.ExternalParameters.ConfigSource
	if cs.URI != want || cs.Digest["sha1"] != first || cs.Path != "Dockerfile" {
		t.Errorf("configSource = %+v, want %s at sha1 %s, path Dockerfile", cs, want, first)
	}
	found := false
	for _, d := range p.BuildDefinition.ResolvedDependencies {
		found = found || (d.URI == want && d.Digest["sha1"] == first)
	}
	if !found {
		t.Errorf("resolvedDependencies %+v lack the context %s", p.BuildDefinition.ResolvedDependencies, want)
	}
	md := p.RunDetails.Metadata
	if vcs := md.BuildKit.VCS; vcs["source"] != want || vcs["revision"] != first {
		t.Errorf("vcs = %v, want source %s revision %s", vcs, want, first)
	}
	if !md.Completeness.ResolvedDependencies || p.BuildDefinition.ExternalParameters.Request.Locals != nil {
		t.Errorf("a Git context's dependencies are complete and no local is named: %+v, locals %+v",
			md.Completeness, p.BuildDefinition.ExternalParameters.Request.Locals)
	}
}

// TestCLIPushAttestations: `builder push` of a stored image pushes the
// attestations the store keeps next to it, as the build stored them: an
// index of the image and its attestation manifest (index, both), a
// referrer of the image (referrers, both), nothing more without any.
func TestCLIPushAttestations(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	reg := buildtest.Registry(t)
	root := t.TempDir()
	for _, tc := range []struct {
		store            string
		index, referrers bool
	}{
		{"index", true, false},
		{"referrers", false, true},
		{"both", true, true},
		{"none", false, false},
	} {
		t.Run(tc.store, func(t *testing.T) {
			// One image per case: attestations are about an image manifest.
			ctxDir := writeCase(t, "ARG BASE\nFROM $BASE\nRUN echo "+tc.store+" > /p\n", map[string]string{})
			local := "attest/push-" + tc.store + ":1"
			args := []string{"--root", root, "build", "-q", "-t", local, "--build-arg", "BASE=" + base}
			if tc.store != "none" {
				args = append(args, "--provenance", "mode=max", "--attest-store", tc.store)
			}
			if out, code := cli(t, append(args, ctxDir)...); code != 0 {
				t.Fatalf("build: exit %d\n%s", code, out)
			}
			ref := reg + "/pushed-" + tc.store + ":1"
			out, code := cli(t, "--root", root, "push", "-q", local, ref)
			if code != 0 {
				t.Fatalf("push: exit %d\n%s", code, out)
			}
			r, _ := name.ParseReference(ref, name.Insecure)
			desc, err := remote.Get(r)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(out); got != desc.Digest.String() {
				t.Errorf("push printed %q, the tag names %s", got, desc.Digest)
			}
			if desc.MediaType.IsIndex() != tc.index {
				t.Fatalf("pushed %s, want an index: %v", desc.MediaType, tc.index)
			}
			img := desc.Digest
			if tc.index {
				var im *v1.IndexManifest
				img, im = pushedIndex(t, ref)
				if p := indexProvenance(t, ref, im, img); !strings.Contains(string(p), `"build-arg:BASE"`) {
					t.Errorf("index provenance: %s", p)
				}
			}
			if tc.referrers {
				if p := referredProvenance(t, ref, img); !strings.Contains(string(p), `"build-arg:BASE"`) {
					t.Errorf("referred provenance: %s", p)
				}
			} else if n := len(referrers(t, r.Context().Digest(img.String()))); n != 0 {
				t.Errorf("%d referrers of %s, want none", n, img)
			}
		})
	}
}

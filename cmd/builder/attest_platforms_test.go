package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"builder/build/attest"
	"builder/build/buildtest"
	"builder/build/push/registrytest"
	"builder/internal/testenv"
)

// platformScanner builds, in root, a scanner image of the host's platform
// that follows BuildKit's scanner protocol and writes one in-toto
// statement whose SPDX document names the architecture file of the
// scanned root filesystem, the machine the scanner ran on, the dep.txt of
// the deps stage and the context's files it got as extras.
func platformScanner(t *testing.T, root string) string {
	t.Helper()
	busybox, err := os.ReadFile(buildtest.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	const ref = "sbom/platform-probe:1"
	dir := writeCase(t, "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"+
		"COPY scan.sh /scan.sh\nENTRYPOINT [\"/bin/sh\", \"/scan.sh\"]\n",
		map[string]string{"busybox": string(busybox), "scan.sh": `e="$BUILDKIT_SCAN_SOURCE_EXTRAS"
echo "{\"_type\":\"https://in-toto.io/Statement/v0.1\",\"predicateType\":\"https://spdx.dev/Document\",\"predicate\":{\"spdxVersion\":\"SPDX-2.3\",\"name\":\"probe\",\"comment\":\"arch=$(cat $BUILDKIT_SCAN_SOURCE/arch.txt) ran-on=$(uname -m) dep=$(cat $e/sbom-deps/dep.txt) ctx=$(ls $e/sbom-context | tr '\n' ,)\"}}" > "$BUILDKIT_SCAN_DESTINATION/probe.spdx.json"
`})
	if out, code := cli(t, "--root", root, "build", "-q", "-t", ref, dir); code != 0 {
		t.Fatalf("build scanner: exit %d\n%s", code, out)
	}
	return ref
}

// platformAttestations is what a test reads back about one platform's
// image: its manifest digest and its statements.
type platformAttestations struct {
	image      v1.Hash
	provenance attest.Provenance
	subject    string // the statements' subject digest
	sbom       string
}

// readStatements parses the statements of attestation manifest raw, read
// with blob, into pa.
func readStatements(t *testing.T, raw []byte, blob func(v1.Descriptor) ([]byte, error), pa *platformAttestations) {
	t.Helper()
	stmts, err := attest.ReadStatements(raw, blob)
	if err != nil || len(stmts) != 2 {
		t.Fatalf("statements: %d, %v", len(stmts), err)
	}
	for _, s := range stmts {
		if len(s.Subject) == 0 {
			t.Fatalf("statement without subject: %+v", s)
		}
		pa.subject = s.Subject[0].Digest["sha256"]
		switch s.PredicateType {
		case attest.PredicateSLSA1:
			if err := json.Unmarshal(s.Predicate, &pa.provenance); err != nil {
				t.Fatal(err)
			}
		case attest.PredicateSPDX:
			pa.sbom = string(s.Predicate)
		}
	}
}

// checkPlatforms checks each platform's attestations: about that image,
// the provenance with that platform's base image, the SBOM of that
// platform's root filesystem and its deps stage, scanned on the host.
func checkPlatforms(t *testing.T, got map[string]*platformAttestations, base string, baseDigests map[string]v1.Hash) {
	t.Helper()
	if len(got) != 2 {
		t.Fatalf("attestations of %d platforms, want 2", len(got))
	}
	for _, arch := range []string{"amd64", "arm64"} {
		pa := got["linux/"+arch]
		if pa == nil {
			t.Errorf("no attestations for linux/%s", arch)
			continue
		}
		if pa.subject != pa.image.Hex {
			t.Errorf("%s: statements about %s, want the image %s", arch, pa.subject, pa.image)
		}
		purl, _ := attest.ImagePURL("docker", base, &v1.Platform{OS: "linux", Architecture: arch})
		deps := pa.provenance.BuildDefinition.ResolvedDependencies
		if len(deps) != 1 || deps[0].URI != purl || deps[0].Digest["sha256"] != baseDigests[arch].Hex {
			t.Errorf("%s: resolvedDependencies %+v, want %s at %s", arch, deps, purl, baseDigests[arch])
		}
		if want := "arch=" + arch + " ran-on=" + unameMachine() + " dep=" + arch + " ctx=Dockerfile,amd64.txt,arm64.txt,"; !strings.Contains(pa.sbom, want) {
			t.Errorf("%s: SBOM %s, want %q", arch, pa.sbom, want)
		}
	}
}

// registryAttestations reads back, for each image of the index ref, the
// attestation manifest the index lists for it (unless referrersOnly, when
// the index must list none) and its referrer, which must be the same
// manifest.
func registryAttestations(t *testing.T, ref string, referrersOnly bool) map[string]*platformAttestations {
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
	want := 4
	if referrersOnly {
		want = 2
	}
	if len(im.Manifests) != want {
		t.Fatalf("index of %s has %d manifests, want %d: %+v", ref, len(im.Manifests), want, im.Manifests)
	}
	inIndex := map[string]v1.Hash{}
	out := map[string]*platformAttestations{}
	for i, m := range im.Manifests {
		if i < 2 {
			if m.Platform == nil || m.Platform.OS != "linux" || attest.IsAttestation(m) {
				t.Fatalf("entry %d of the index is %+v, want an image", i, m)
			}
			out["linux/"+m.Platform.Architecture] = &platformAttestations{image: m.Digest}
			continue
		}
		if !attest.IsAttestation(m) || m.Platform == nil || m.Platform.OS != "unknown" || m.Platform.Architecture != "unknown" {
			t.Errorf("entry %d of the index is %+v, want an attestation manifest", i, m)
		}
		inIndex[m.Annotations[attest.AnnotationReferenceDigest]] = m.Digest
	}
	repo := r.Context()
	blob := func(l v1.Descriptor) ([]byte, error) {
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
	}
	for p, pa := range out {
		var found []v1.Descriptor
		for _, d := range referrers(t, repo.Digest(pa.image.String())) {
			if d.ArtifactType == attest.ArtifactType {
				found = append(found, d)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%s: %d attestation referrers of %s, want 1", p, len(found), pa.image)
		}
		if !referrersOnly && inIndex[pa.image.String()] != found[0].Digest {
			t.Errorf("%s: the index lists attestation manifest %s, the referrers %s", p, inIndex[pa.image.String()], found[0].Digest)
		}
		desc, err := remote.Get(repo.Digest(found[0].Digest.String()))
		if err != nil {
			t.Fatal(err)
		}
		readStatements(t, desc.Manifest, blob, pa)
	}
	return out
}

// TestCLIMultiPlatformAttestations builds a two-platform image (a
// linux/amd64 and linux/arm64 base, no RUN, so nothing is emulated) with
// provenance and an SBOM and checks that each platform's image gets its
// own attestation manifest, as BuildKit writes them: in the index
// (unknown/unknown, annotated with the image's digest) and as a referrer
// of that image, pushed to a registry with the referrers API and to one
// without (tag fallback), read back with go-containerregistry, `builder
// inspect --attestations`, oras discover and skopeo copy --all; with
// --attest-store=referrers the index lists only the images. The local
// store, `builder push` of the stored image and an OCI archive carry them
// too.
func TestCLIMultiPlatformAttestations(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.MultiArchRegistry(t)
	baseDigests := map[string]v1.Hash{}
	{
		r, _ := name.ParseReference(base, name.Insecure)
		idx, err := remote.Index(r)
		if err != nil {
			t.Fatal(err)
		}
		im, _ := idx.IndexManifest()
		for _, m := range im.Manifests {
			baseDigests[m.Platform.Architecture] = m.Digest
		}
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	root := t.TempDir()
	scanner := platformScanner(t, root)
	// The deps stage and the context are scanned as extras
	// (BUILDKIT_SBOM_SCAN_STAGE, BUILDKIT_SBOM_SCAN_CONTEXT), per platform.
	ctxDir := writeCase(t, "FROM "+base+" AS deps\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nARG TARGETARCH\nCOPY ${TARGETARCH}.txt /dep.txt\n"+
		"FROM "+base+"\nARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nARG TARGETARCH\nCOPY --from=deps /dep.txt /arch.txt\n",
		map[string]string{"amd64.txt": "amd64", "arm64.txt": "arm64"})
	build := func(t *testing.T, args ...string) string {
		t.Helper()
		args = append([]string{"--root", root, "build", "--platform", "linux/amd64,linux/arm64", "--provenance", "mode=min",
			"--sbom", "generator=" + scanner}, args...)
		out, code := cli(t, append(args, ctxDir)...)
		if code != 0 {
			t.Fatalf("build: exit %d\n%s", code, out)
		}
		if strings.Contains(out, "WARNING") {
			t.Errorf("build warns:\n%s", out)
		}
		return out
	}
	for _, reg := range []struct{ name, addr string }{
		{"referrers-api", buildtest.Registry(t)},
		{"tag-fallback", registrytest.Shared(t, registrytest.Options{}).Repo("attest-multi")},
	} {
		t.Run(reg.name, func(t *testing.T) {
			ref := reg.addr + "/app:multi"
			build(t, "-t", ref, "--push")
			got := registryAttestations(t, ref, false)
			checkPlatforms(t, got, base, baseDigests)
			out, code := cli(t, "--root", root, "inspect", "--attestations", "-f", "{{json .Provenance}}", "docker://"+ref)
			var prov map[string]attest.Provenance
			if code != 0 || json.Unmarshal([]byte(out), &prov) != nil || len(prov) != 2 || prov["linux/arm64"].BuildDefinition.BuildType != attest.BuildType {
				t.Errorf("inspect --attestations docker://: exit %d\n%s", code, out)
			}
			skopeoCopyAll(t, ref, 2)
			if oras := os.Getenv("BUILDER_TEST_ORAS"); oras != "" || testenv.Required() {
				for _, pa := range got {
					orasDiscover(t, oras, ref, pa.image)
				}
			}
		})
	}
	t.Run("referrers-only", func(t *testing.T) {
		ref := buildtest.Registry(t) + "/app:referrers"
		build(t, "-t", ref, "--push", "--attest-store", "referrers")
		checkPlatforms(t, registryAttestations(t, ref, true), base, baseDigests)
	})
	for _, store := range []string{"both", "referrers"} {
		t.Run("store-push-"+store, func(t *testing.T) {
			local := "attest/multi-" + store + ":1"
			built := build(t, "-t", local, "--attest-store", store)
			out, code := cli(t, "--root", root, "inspect", "--attestations", local)
			var ai attestationsInfo
			if code != 0 || json.Unmarshal([]byte(out), &ai) != nil || len(ai.Platforms) != 2 || len(ai.Statements) != 4 {
				t.Fatalf("inspect --attestations of the stored index: exit %d\n%s", code, out)
			}
			// The build names the index the tag names.
			if !strings.Contains(built, "index "+ai.Digest+" of 2 platforms") {
				t.Errorf("the build does not name the stored index %s:\n%s", ai.Digest, built)
			}
			for _, arch := range []string{"amd64", "arm64"} {
				if p := ai.Platforms["linux/"+arch]; p == nil || len(p.Statements) != 2 || p.Provenance == nil {
					t.Errorf("stored attestations of %s: %+v", arch, p)
				}
			}
			// Prune keeps them while the index is tagged; the store's
			// commands read an index holding attestation manifests.
			if out, code := cli(t, "--root", root, "prune", "-a"); code != 0 {
				t.Fatalf("prune: %s", out)
			}
			for _, args := range [][]string{{"check"}, {"du"}, {"images"}, {"inspect", local}, {"history", local}} {
				if out, code := cli(t, append([]string{"--root", root}, args...)...); code != 0 {
					t.Errorf("%v: exit %d\n%s", args, code, out)
				}
			}
			ref := buildtest.Registry(t) + "/pushed:" + store
			if out, code := cli(t, "--root", root, "push", "-q", local, ref); code != 0 {
				t.Fatalf("push: exit %d\n%s", code, out)
			}
			checkPlatforms(t, registryAttestations(t, ref, store == "referrers"), base, baseDigests)
		})
	}
	t.Run("oci", func(t *testing.T) {
		for _, store := range []string{"index", "referrers"} {
			dest := filepath.Join(t.TempDir(), "app.tar")
			build(t, "-o", "type=oci,dest="+dest, "--attest-store", store)
			files := tarFiles(t, dest)
			var top v1.IndexManifest
			if err := json.Unmarshal([]byte(files["index.json"]), &top); err != nil {
				t.Fatal(err)
			}
			var idx v1.IndexManifest
			if err := json.Unmarshal([]byte(files["blobs/sha256/"+top.Manifests[0].Digest.Hex]), &idx); err != nil {
				t.Fatal(err)
			}
			var atts []v1.Descriptor
			switch store {
			case "index":
				if len(top.Manifests) != 1 || len(idx.Manifests) != 4 {
					t.Fatalf("index store: index.json %d entries, index %d, want 1 and 4", len(top.Manifests), len(idx.Manifests))
				}
				atts = idx.Manifests[2:]
			case "referrers":
				// index.json lists the image index and, beside it, the
				// attestation manifests, as a layout lists referrers.
				if len(top.Manifests) != 3 || len(idx.Manifests) != 2 {
					t.Fatalf("referrers store: index.json %d entries, index %d, want 3 and 2", len(top.Manifests), len(idx.Manifests))
				}
				atts = top.Manifests[1:]
			}
			for i, a := range atts {
				if !attest.IsAttestation(a) || a.Annotations[attest.AnnotationReferenceDigest] != idx.Manifests[i].Digest.String() {
					t.Errorf("%s: attestation entry %+v is not about image %s", store, a, idx.Manifests[i].Digest)
				}
				var m v1.Manifest
				if err := json.Unmarshal([]byte(files["blobs/sha256/"+a.Digest.Hex]), &m); err != nil || len(m.Layers) != 2 {
					t.Errorf("%s: attestation manifest %s missing from the archive", store, a.Digest)
					continue
				}
				for _, l := range m.Layers {
					if _, ok := files["blobs/sha256/"+l.Digest.Hex]; !ok {
						t.Errorf("%s: statement %s missing from the archive", store, l.Digest)
					}
				}
			}
		}
	})
}

// unameMachine is what uname -m prints on the host.
func unameMachine() string {
	if hostArch() == "arm64" {
		return "aarch64"
	}
	return "x86_64"
}

// TestCLIDiffAttestations: builder diff ignores attestations unless
// --attestations asks. Two builds that differ only in a build arg no ARG
// declares make the same image, whose mode=max provenance differs in that arg: diff
// says identical (exit 0) without the flag and names the arg with it
// (exit 1), for images in the store, an OCI archive and a registry; the
// archive and the push of one build have the same attestations.
func TestCLIDiffAttestations(t *testing.T) {
	buildtest.RequireRoot(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	root := t.TempDir()
	reg := buildtest.Registry(t)
	ctxDir := writeCase(t, "FROM scratch\nCOPY f /f\n", map[string]string{"f": "x"})
	archive := filepath.Join(t.TempDir(), "one.tar")
	for _, v := range []string{"1", "2"} {
		args := []string{"--root", root, "build", "-t", "diff/app:" + v, "--provenance", "mode=max", "--build-arg", "V=" + v}
		if v == "1" {
			args = append(args, "-o", "type=image", "-o", "type=oci,dest="+archive, "-o", "type=registry,name="+reg+"/app:1")
		}
		if out, code := cli(t, append(args, ctxDir)...); code != 0 {
			t.Fatalf("build V=%s: exit %d\n%s", v, code, out)
		}
	}
	const arg = ".predicate.buildDefinition.externalParameters.request.args.build-arg:V: \"1\" → \"2\""
	for _, tc := range []struct {
		name string
		a, b string
		args []string
		code int
		want string
	}{
		{"ignored", "oci-archive:" + archive, "diff/app:2", nil, 0, "images are identical ("},
		{"archive", "oci-archive:" + archive, "diff/app:2", []string{"--attestations"}, 1, arg},
		{"registry", "docker://" + reg + "/app:1", "diff/app:2", []string{"--attestations"}, 1, arg},
		{"registry-and-archive", "docker://" + reg + "/app:1", "oci-archive:" + archive, []string{"--attestations"}, 0, "attestations are identical"},
		// The store keeps one set of attestations per image, the last
		// build's: both names name it.
		{"store", "diff/app:1", "diff/app:2", []string{"--attestations"}, 0, "attestations are identical"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"--root", root, "diff", "--insecure-registry", reg}, tc.args...), tc.a, tc.b)
			out, code := cli(t, args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("diff %v: exit %d, want %d and %q\n%s", tc.args, code, tc.code, tc.want, out)
			}
			if tc.code == 1 && !strings.Contains(out, "images are identical; their attestations differ") {
				t.Errorf("the verdict does not say only the attestations differ:\n%s", out)
			}
		})
	}
}

// TestCLIInspectAttestationsHostile: a registry listing more attestation
// referrers of an image than any build makes is refused by inspect
// --attestations and diff --attestations, not read one 64 MiB statement
// after another.
func TestCLIInspectAttestationsHostile(t *testing.T) {
	buildtest.RequireRoot(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ref := buildtest.Registry(t) + "/hostile:1"
	r, _ := name.ParseReference(ref, name.Insecure)
	img, err := remote.Image(func() name.Reference {
		b, _ := name.ParseReference(buildtest.BusyboxRegistry(t), name.Insecure)
		return b
	}())
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	size, _ := img.Size()
	mt, _ := img.MediaType()
	for i := range maxAttestationManifests + 1 {
		s, err := attest.NewStatement(attest.PredicateSLSA1, []attest.Subject{{Name: "x", Digest: attest.DigestSet(d)}},
			map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		b, err := attest.NewBundle(v1.Descriptor{MediaType: mt, Digest: d, Size: size}, []*attest.Statement{s}, true)
		if err != nil {
			t.Fatal(err)
		}
		att, _ := b.Image()
		if err := remote.Write(r.Context().Digest(b.Descriptor.Digest.String()), att); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	for _, args := range [][]string{
		{"inspect", "--attestations", "docker://" + ref},
		{"diff", "--attestations", "docker://" + ref, "docker://" + ref},
	} {
		out, code := cli(t, append([]string{"--root", root}, args...)...)
		if code == 0 || !strings.Contains(out, "more than 16") {
			t.Errorf("%v: exit %d, want a refusal of more than 16 attestation manifests\n%s", args, code, out)
		}
	}
}

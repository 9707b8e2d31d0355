package imagediff

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/attest"
)

// statement is an in-toto statement of predicate type typ about img.
func statement(t *testing.T, img v1.Image, typ, predicate string) *attest.Statement {
	t.Helper()
	d, _ := img.Digest()
	s, err := attest.NewStatement(typ, []attest.Subject{{Name: "x", Digest: attest.DigestSet(d)}}, json.RawMessage(predicate))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCompareAttestations: predicates are paired by type and compared
// field by field; a statement one side lacks is one line; subjects (the
// image digests) are not compared.
func TestCompareAttestations(t *testing.T) {
	imgA := image(t, "A=1", base)
	imgB := image(t, "A=2", base)
	prov := func(img v1.Image, arg string) *attest.Statement {
		return statement(t, img, attest.PredicateSLSA1, `{"buildDefinition":{"externalParameters":{"request":{"args":{"build-arg:V":"`+arg+`"}}}}}`)
	}
	sbom := statement(t, imgA, attest.PredicateSPDX, `{"spdxVersion":"SPDX-2.3","name":"sbom"}`)
	for _, tc := range []struct {
		name string
		a, b []*attest.Statement
		want []Change
	}{
		{"same-predicates-other-subjects", []*attest.Statement{prov(imgA, "1")}, []*attest.Statement{prov(imgB, "1")}, nil},
		{"arg", []*attest.Statement{prov(imgA, "1"), sbom}, []*attest.Statement{sbom, prov(imgA, "2")}, []Change{{
			Path: "attestations[" + attest.PredicateSLSA1 + "#0].predicate.buildDefinition.externalParameters.request.args.build-arg:V",
			Old:  `"1"`, New: `"2"`}}},
		{"only-in-b", nil, []*attest.Statement{sbom}, []Change{{Path: "attestations[" + attest.PredicateSPDX + "#0]", New: "present"}}},
		{"none", nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{}
			if err := r.CompareAttestations(tc.a, tc.b); err != nil {
				t.Fatal(err)
			}
			if len(r.Attestations) != len(tc.want) {
				t.Fatalf("changes %+v, want %+v", r.Attestations, tc.want)
			}
			for i := range tc.want {
				if r.Attestations[i] != tc.want[i] {
					t.Errorf("change %+v, want %+v", r.Attestations[i], tc.want[i])
				}
			}
		})
	}
	// The same image with other attestations differs, and says so.
	r := &Report{A: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}}
	r.B = r.A
	if err := r.CompareAttestations([]*attest.Statement{prov(imgA, "1")}, []*attest.Statement{prov(imgA, "2")}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.Write(&out)
	if r.Identical() || !strings.Contains(out.String(), "attestations:\n  attestations[") ||
		!strings.Contains(out.String(), "images are identical; their attestations differ") {
		t.Errorf("report:\n%s", out.String())
	}
}

// TestOpenAttestations: Source.Attestations finds the statements of the
// image opened out of OCI layouts with attestation manifests in the index
// (BuildKit's form, one image or several platforms) and beside it as
// referrers; a docker archive and a layout without any give none; a
// referrer about another image is not the image's; a layout listing more
// attestation manifests than an image can have is refused.
func TestOpenAttestations(t *testing.T) {
	ctx := context.Background()
	amd := image(t, "ARCH=amd64", base)
	arm := image(t, "ARCH=arm64", base)
	host := v1.Platform{OS: "linux", Architecture: "amd64"}
	bundle := func(img v1.Image, arg string, referrer bool) *attest.Bundle {
		d, _ := img.Digest()
		size, _ := img.Size()
		mt, _ := img.MediaType()
		b, err := attest.NewBundle(v1.Descriptor{MediaType: mt, Digest: d, Size: size},
			[]*attest.Statement{statement(t, img, attest.PredicateSLSA1, `{"arg":"`+arg+`"}`)}, referrer)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	add := func(img v1.Image, p v1.Platform) mutate.IndexAddendum {
		return mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &p}}
	}
	addBundle := func(b *attest.Bundle) mutate.IndexAddendum {
		img, err := b.Image()
		if err != nil {
			t.Fatal(err)
		}
		return mutate.IndexAddendum{Add: img, Descriptor: b.Descriptor}
	}
	idx := func(adds ...mutate.IndexAddendum) v1.ImageIndex {
		return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	var manyBundles []mutate.IndexAddendum
	for i := range maxAttestationManifests + 1 {
		manyBundles = append(manyBundles, addBundle(bundle(amd, strconv.Itoa(i), true)))
	}
	platforms := idx(add(amd, host), add(arm, arm64), addBundle(bundle(amd, "amd", false)), addBundle(bundle(arm, "arm", true)))
	for _, tc := range []struct {
		name string
		top  []mutate.IndexAddendum // index.json's entries
		want string                 // the arg of the statement found; "" none
	}{
		{"index-form", []mutate.IndexAddendum{{Add: idx(add(amd, host), addBundle(bundle(amd, "index", false))),
			Descriptor: v1.Descriptor{MediaType: types.OCIImageIndex}}}, "index"},
		{"referrer-beside", []mutate.IndexAddendum{add(amd, host), addBundle(bundle(amd, "referrer", true))}, "referrer"},
		{"referrer-of-another-image", []mutate.IndexAddendum{add(amd, host), addBundle(bundle(arm, "other", true))}, ""},
		{"platforms", []mutate.IndexAddendum{{Add: platforms, Descriptor: v1.Descriptor{MediaType: types.OCIImageIndex}}}, "amd"},
		{"none", []mutate.IndexAddendum{add(amd, host)}, ""},
		{"too-many", append([]mutate.IndexAddendum{add(amd, host)}, manyBundles...), "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := layout.Write(filepath.Join(dir, "layout"), idx(tc.top...)); err != nil {
				t.Fatal(err)
			}
			tarDir(t, filepath.Join(dir, "layout"), filepath.Join(dir, "oci.tar"))
			for _, ref := range []string{"oci:" + filepath.Join(dir, "layout"), "oci-archive:" + filepath.Join(dir, "oci.tar")} {
				s, err := Open(ctx, ref, OpenOptions{Platform: &host})
				if err != nil {
					t.Fatal(err)
				}
				stmts, err := s.Attestations(ctx)
				s.Close()
				if tc.want == "error" {
					if err == nil || !strings.Contains(err.Error(), "more than 16 attestation manifests") {
						t.Errorf("%s: %v, want too many attestation manifests", ref, err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				got := ""
				for _, st := range stmts {
					var pr struct{ Arg string }
					json.Unmarshal(st.Predicate, &pr)
					got += pr.Arg
				}
				if got != tc.want {
					t.Errorf("%s: statements of %q, want %q", ref, got, tc.want)
				}
			}
		})
	}
	dockerTar := filepath.Join(t.TempDir(), "docker.tar")
	tag, _ := name.NewTag("example.com/x:1")
	if err := tarball.WriteToFile(dockerTar, tag, amd); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, dockerTar, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if stmts, err := s.Attestations(ctx); err != nil || len(stmts) != 0 {
		t.Errorf("docker archive: %d statements, %v", len(stmts), err)
	}
}

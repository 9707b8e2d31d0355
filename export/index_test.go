package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"builder/internal/atomicfile"
	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestIndex(t *testing.T) {
	s := openStore(t)
	x, err := OpenIndex(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if entries, err := x.List(); err != nil || len(entries) != 0 {
		t.Fatalf("new index lists %v, %v", entries, err)
	}
	d := fixtureImage(t, s, content.Gzip)
	img, err := LoadImage(s, d)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	manifestSize, _ := img.Size()
	wantSize := manifestSize + m.Config.Size + m.Layers[0].Size

	if err := x.Tag("app", v1.Descriptor{Digest: d}); err != nil {
		t.Fatal(err)
	}
	if err := x.Tag("ghcr.io/o/app:v1", v1.Descriptor{Digest: d, Annotations: map[string]string{"x": "y"}}); err != nil {
		t.Fatal(err)
	}

	lookups := []struct {
		name    string
		wantErr error
	}{
		{"app", nil},
		{"app:latest", nil},
		{"docker.io/library/app:latest", nil},
		{"index.docker.io/library/app", nil},
		{"app@" + d.String(), nil},
		{"ghcr.io/o/app:v1", nil},
		{"ghcr.io/o/app@" + d.String(), nil},
		{"app:v1", ErrNotFound},
		{"other@" + d.String(), ErrNotFound},
	}
	for _, tt := range lookups {
		desc, err := x.Lookup(tt.name)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Lookup(%q) = %v, want %v", tt.name, err, tt.wantErr)
			continue
		}
		if err == nil && (desc.Digest != d || desc.Size != manifestSize || desc.MediaType != types.OCIManifestSchema1) {
			t.Errorf("Lookup(%q) = %+v", tt.name, desc)
		}
	}
	if desc, _ := x.Lookup("ghcr.io/o/app:v1"); desc.Annotations["x"] != "y" ||
		desc.Annotations[AnnotationRefName] != "ghcr.io/o/app:v1" ||
		desc.Annotations[AnnotationContainerdName] != "ghcr.io/o/app:v1" {
		t.Errorf("annotations = %v", desc.Annotations)
	}

	entries, err := x.List()
	if err != nil {
		t.Fatal(err)
	}
	id := m.Config.Digest
	want := []Entry{
		{Name: "docker.io/library/app:latest", Digest: d, MediaType: types.OCIManifestSchema1, ID: id, Size: wantSize, Created: created, Platforms: []string{"linux/amd64"}},
		{Name: "ghcr.io/o/app:v1", Digest: d, MediaType: types.OCIManifestSchema1, ID: id, Size: wantSize, Created: created, Platforms: []string{"linux/amd64"}},
	}
	if fmt.Sprint(entries) != fmt.Sprint(want) {
		t.Errorf("List = %+v\nwant %+v", entries, want)
	}

	// The root reads as an OCI layout, and its image validates.
	p, err := layout.FromPath(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	limg, err := ii.Image(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(limg); err != nil {
		t.Errorf("validate layout image: %v", err)
	}

	// Retagging moves the tag, untagging removes it once.
	other, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	od, err := WriteImage(context.Background(), s, other)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Tag("app", v1.Descriptor{Digest: od}); err != nil {
		t.Fatal(err)
	}
	if desc, err := x.Lookup("app"); err != nil || desc.Digest != od || desc.MediaType != types.DockerManifestSchema2 {
		t.Errorf("after retag Lookup = %+v, %v", desc, err)
	}
	if entries, _ := x.List(); len(entries) != 2 {
		t.Errorf("retag changed the number of entries: %v", entries)
	}
	if err := x.Untag("app"); err != nil {
		t.Fatal(err)
	}
	if err := x.Untag("app"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Untag = %v", err)
	}
	if _, err := x.Lookup("app"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after Untag = %v", err)
	}
	if !s.Has(od) {
		t.Error("Untag removed the manifest blob")
	}
}

func TestIndexTagErrors(t *testing.T) {
	s := openStore(t)
	x, err := OpenIndex(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	d := fixtureImage(t, s, content.Gzip)
	tests := []struct {
		name    string
		ref     string
		digest  v1.Hash
		wantErr error
	}{
		{"digest ref", "app@" + d.String(), d, nil},
		{"bad name", "App", d, nil},
		{"missing manifest", "app", layerDiffID, content.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := x.Tag(tt.ref, v1.Descriptor{Digest: tt.digest})
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("Tag = %v, want an error (%v)", err, tt.wantErr)
			}
		})
	}
	if entries, _ := x.List(); len(entries) != 0 {
		t.Errorf("failed tags left entries: %v", entries)
	}
}

func TestIndexConcurrentTags(t *testing.T) {
	s := openStore(t)
	d := fixtureImage(t, s, content.Gzip)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate Index values, as separate processes would have.
			x, err := OpenIndex(s.Root())
			if err == nil {
				err = x.Tag(fmt.Sprintf("app:%d", i), v1.Descriptor{Digest: d})
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	x, _ := OpenIndex(s.Root())
	if entries, err := x.List(); err != nil || len(entries) != 16 {
		t.Errorf("List has %d entries, want 16 (%v)", len(entries), err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.Root(), atomicfile.TempPrefix+"*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestIndexKeepsForeignEntries(t *testing.T) {
	s := openStore(t)
	d := fixtureImage(t, s, content.Gzip)
	// An index.json written by another tool, with an unnamed entry.
	foreign := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}]}`, d)
	if err := os.WriteFile(filepath.Join(s.Root(), "index.json"), []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	x, err := OpenIndex(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Tag("app", v1.Descriptor{Digest: d}); err != nil {
		t.Fatal(err)
	}
	p, _ := layout.FromPath(s.Root())
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, _ := ii.IndexManifest()
	if len(im.Manifests) != 2 || im.Manifests[0].Size != 1 {
		t.Errorf("manifests = %+v", im.Manifests)
	}
	if entries, _ := x.List(); len(entries) != 1 {
		t.Errorf("List = %v, want only the named entry", entries)
	}
}

// TestIndexAttestationsOfIndexImages: an attestation entry about an image
// of a multi-platform index (the image is not tagged itself) lives while
// a tag names the index its builder.attest-index annotation gives, and is
// dropped with it.
func TestIndexAttestationsOfIndexImages(t *testing.T) {
	s := openStore(t)
	x, err := OpenIndex(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	parent := fixtureImage(t, s, content.Gzip) // stands in for the tagged index
	if err := x.Tag("multi", v1.Descriptor{Digest: parent}); err != nil {
		t.Fatal(err)
	}
	hash := func(c string) v1.Hash { h, _, _ := v1.SHA256(bytes.NewReader([]byte(c))); return h }
	img := hash("platform image")
	att := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: hash("attestation"), Size: 10,
		Annotations: map[string]string{AnnotationReferenceType: referenceTypeAttestation,
			AnnotationReferenceDigest: img.String(), AnnotationAttestIndex: parent.String()}}
	orphan := att
	orphan.Digest = hash("orphan")
	orphan.Annotations = map[string]string{AnnotationReferenceType: referenceTypeAttestation,
		AnnotationReferenceDigest: hash("other image").String(), AnnotationAttestIndex: hash("untagged index").String()}
	for _, a := range []v1.Descriptor{orphan, att} {
		if err := x.Attach(a); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		d    v1.Hash
		want int
	}{{img, 1}, {v1.Hash{}, 1}, {hash("other image"), 0}} {
		if got, err := x.Attestations(tc.d); err != nil || len(got) != tc.want {
			t.Errorf("Attestations(%s) = %d entries, %v; want %d", tc.d, len(got), err, tc.want)
		}
	}
	if err := x.Untag("multi"); err != nil {
		t.Fatal(err)
	}
	if got, err := x.Attestations(img); err != nil || len(got) != 0 {
		t.Errorf("after the index's tag is gone: %d entries, %v", len(got), err)
	}
}

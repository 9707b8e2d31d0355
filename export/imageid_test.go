package export

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"builder/snapshot/content"
)

// TestResolve: names, image IDs (config digests) and manifest digests, in
// full and as unique prefixes; ambiguous and hostile refs.
func TestResolve(t *testing.T) {
	s := openStore(t)
	x, err := OpenIndex(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	var imgs [2]v1.Hash
	var ids [2]v1.Hash
	for i := range imgs {
		r, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		if imgs[i], err = WriteImage(context.Background(), s, r); err != nil {
			t.Fatal(err)
		}
		ids[i] = x.ImageID(imgs[i])
		if ids[i] == imgs[i] {
			t.Fatalf("ImageID of a manifest is its own digest")
		}
	}
	// Names that look like IDs: a name wins over an ID prefix.
	id0, m0 := ids[0].Hex, imgs[0].Hex
	for n, d := range map[string]v1.Hash{"a:1": imgs[0], "a:2": imgs[0], "b:1": imgs[1], id0[:6]: imgs[1]} {
		if err := x.Tag(n, v1.Descriptor{Digest: d}); err != nil {
			t.Fatal(err)
		}
	}
	bNames := []string{"docker.io/library/b:1", "docker.io/library/" + id0[:6] + ":latest"}
	slices.Sort(bNames)
	b := strings.Join(bNames, ",")
	for _, tc := range []struct {
		ref   string
		want  v1.Hash
		names string
		byID  bool
		err   error
	}{
		{"a:1", imgs[0], "docker.io/library/a:1,docker.io/library/a:2", false, nil},
		{"b:1", imgs[1], b, false, nil},
		{ids[0].String(), imgs[0], "docker.io/library/a:1,docker.io/library/a:2", true, nil},
		{id0, imgs[0], "docker.io/library/a:1,docker.io/library/a:2", true, nil},
		{id0[:12], imgs[0], "docker.io/library/a:1,docker.io/library/a:2", true, nil},
		{"sha256:" + id0[:6], imgs[0], "docker.io/library/a:1,docker.io/library/a:2", true, nil},
		{id0[:6], imgs[1], b, false, nil}, // the name
		{imgs[0].String(), imgs[0], "docker.io/library/a:1,docker.io/library/a:2", true, nil},
		{m0[:8], imgs[0], "docker.io/library/a:1,docker.io/library/a:2", true, nil},
		{ids[1].Hex[:10], imgs[1], b, true, nil},
		{"sha256:" + strings.Repeat("0", 64), v1.Hash{}, "", false, ErrNotFound},
		{strings.Repeat("f", 64), v1.Hash{}, "", false, ErrNotFound},
		{id0[:3], v1.Hash{}, "", false, ErrNotFound}, // shorter than MinIDPrefix: a name
		{"sha256:" + id0[:3], v1.Hash{}, "", false, nil},
		{"sha256:" + strings.ToUpper(id0), v1.Hash{}, "", false, nil},
		{"sha256:" + id0 + "0", v1.Hash{}, "", false, nil},
		{"nope", v1.Hash{}, "", false, ErrNotFound},
	} {
		r, err := x.Resolve(tc.ref)
		if tc.want == (v1.Hash{}) {
			if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) {
				t.Errorf("Resolve(%q) = %v, %v; want an error (%v)", tc.ref, r.Desc.Digest, err, tc.err)
			}
			continue
		}
		if err != nil || r.Desc.Digest != tc.want || strings.Join(r.Names, ",") != tc.names || r.ByID != tc.byID {
			t.Errorf("Resolve(%q) = %v %q byID=%v, %v; want %v %q %v", tc.ref, r.Desc.Digest, r.Names, r.ByID, err, tc.want, tc.names, tc.byID)
		}
	}
	// Two images with the same config (another compression) share an ID.
	if err := x.Tag("c:1", v1.Descriptor{Digest: fixtureImage(t, s, content.Gzip)}); err != nil {
		t.Fatal(err)
	}
	if err := x.Tag("c:2", v1.Descriptor{Digest: fixtureImage(t, s, content.Zstd)}); err != nil {
		t.Fatal(err)
	}
	c, err := x.Resolve("c:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Resolve(x.ImageID(c.Desc.Digest).String()); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("an ID two manifests share: %v, want ErrAmbiguous", err)
	}
}

// TestWriteOCIArchiveImages: several images in one archive, an entry per
// name, each blob once; it loads back with every name.
func TestWriteOCIArchiveImages(t *testing.T) {
	s := openStore(t)
	a, err := LoadImage(s, fixtureImage(t, s, content.Gzip))
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadImage(s, fixtureImage(t, s, content.Zstd))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	named := []NamedImage{{Image: a, RefName: "app:1"}, {Image: b, RefName: "app:2"}, {Image: a, RefName: "ghcr.io/o/app:3"}, {Image: b}}
	if err := WriteOCIArchiveImages(context.Background(), &buf, named); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := WriteOCIArchiveImages(context.Background(), &again, named); err != nil || !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Errorf("the same images gave other bytes (%v)", err)
	}
	p := filepath.Join(t.TempDir(), "a.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadArchive(context.Background(), openStore(t), p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range loaded {
		got = append(got, strings.Join(l.Names, "+"))
	}
	if strings.Join(got, ",") != "docker.io/library/app:1,docker.io/library/app:2,ghcr.io/o/app:3," {
		t.Errorf("loaded names %q", got)
	}
	ad, _ := a.Digest()
	if loaded[0].Digest != ad || loaded[2].Digest != ad {
		t.Errorf("loaded digests %v, want %s", loaded, ad)
	}
}

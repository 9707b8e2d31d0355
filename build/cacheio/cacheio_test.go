package cacheio

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"builder/build/buildtest"
	"builder/build/cache"
	"builder/build/push/registrytest"
	"builder/build/registry"
	"builder/snapshot/content"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in     string
		export bool
		want   Spec
		err    string
	}{
		{in: "type=registry,ref=r/x:c", export: true, want: Spec{Type: TypeRegistry, Ref: "r/x:c", Mode: ModeMin}},
		{in: "type=registry,ref=r/x:c,mode=max,compression=zstd,cache-mounts=true", export: true,
			want: Spec{Type: TypeRegistry, Ref: "r/x:c", Mode: ModeMax, Compression: "zstd", CacheMounts: true, Merge: true}},
		{in: "type=registry,ref=r/x:c,mode=max,merge=false", export: true, want: Spec{Type: TypeRegistry, Ref: "r/x:c", Mode: ModeMax}},
		{in: "type=registry,ref=r/x:c,merge=true,max-records=50,max-size=1GiB", export: true,
			want: Spec{Type: TypeRegistry, Ref: "r/x:c", Mode: ModeMin, Merge: true, MaxRecords: 50, MaxSize: 1 << 30}},
		{in: "type=registry,ref=x,max-records=5", export: true, err: "need merge=true or mode=max"},
		{in: "type=registry,ref=x,mode=max,max-records=0", export: true, err: "max-records \"0\""},
		{in: "type=registry,ref=x,mode=max,max-records=-1", export: true, err: "max-records"},
		{in: "type=registry,ref=x,mode=max,max-size=lots", export: true, err: "max-size \"lots\""},
		{in: "type=registry,ref=x,merge=maybe", export: true, err: "merge \"maybe\""},
		{in: "type=local,dest=d,merge=true", export: true, err: "are for type=registry"},
		{in: "type=registry,ref=x,merge=true", err: "merge= is for --cache-to"},
		{in: "ref=r/x:c", export: true, want: Spec{Type: TypeRegistry, Ref: "r/x:c", Mode: ModeMin}},
		{in: "type=local,dest=/tmp/c,mode=max", export: true, want: Spec{Type: TypeLocal, Dir: "/tmp/c", Tag: DefaultTag, Mode: ModeMax}},
		{in: "type=local,dest=d,tag=v2", export: true, want: Spec{Type: TypeLocal, Dir: "d", Tag: "v2", Mode: ModeMin}},
		{in: "type=inline", export: true, want: Spec{Type: TypeInline, Mode: ModeMin}},
		{in: "r/x:c", want: Spec{Type: TypeRegistry, Ref: "r/x:c"}},
		{in: "type=registry,ref=r/x:c", want: Spec{Type: TypeRegistry, Ref: "r/x:c"}},
		{in: "type=local,src=d", want: Spec{Type: TypeLocal, Dir: "d", Tag: DefaultTag}},
		{in: "r/x:c", export: true, err: "give type="},
		{in: "type=registry", export: true, err: "needs ref="},
		{in: "type=local", export: true, err: "needs dest="},
		{in: "type=local,src=d", export: true, err: "src= is for --cache-from"},
		{in: "type=local,dest=d", err: "dest= is for --cache-to"},
		{in: "type=registry,ref=x,mode=max", err: "mode= is for --cache-to"},
		{in: "type=registry,ref=x,mode=all", export: true, err: "mode \"all\""},
		{in: "type=registry,ref=x,compression=lz4", export: true, err: "compression \"lz4\""},
		{in: "type=inline,mode=max", export: true, err: "type=inline takes no"},
		{in: "type=inline", err: "type=inline is for --cache-to"},
		{in: "type=gha", export: true, err: "unknown cache type"},
		{in: "type=registry,ref=x,bogus=1", export: true, err: "unknown key"},
		{in: "", err: "empty value"},
	} {
		parse := ParseImport
		if tc.export {
			parse = ParseExport
		}
		got, err := parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func hash(s string) v1.Hash {
	h, _, _ := v1.SHA256(strings.NewReader(s))
	return h
}

func TestDecodeRejects(t *testing.T) {
	good := cache.Record{Key: cache.Key(strings.Repeat("a", 64)), DiffID: hash("d"), Digest: hash("g"), Size: 3, MediaType: content.MediaTypeLayerGzip}
	for name, mod := range map[string]func(c *Config){
		"version":     func(c *Config) { c.Version = "builder.cache.v0" },
		"short key":   func(c *Config) { c.Records[0].Key = "abc" },
		"upper key":   func(c *Config) { c.Records[0].Key = cache.Key(strings.Repeat("A", 64)) },
		"no digest":   func(c *Config) { c.Records[0].Digest = v1.Hash{} },
		"media type":  func(c *Config) { c.Records[0].MediaType = "text/plain" },
		"empty+layer": func(c *Config) { c.Records[0].Empty = true },
		"mount no id": func(c *Config) {
			c.Mounts = []Mount{{DiffID: hash("x"), Digest: hash("y"), MediaType: content.MediaTypeLayerGzip}}
		},
		"negative len": func(c *Config) { c.Records[0].Size = -1 },
		"used key":     func(c *Config) { c.Used = map[cache.Key]time.Time{"../../etc": {}} },
	} {
		c := Config{Version: FormatVersion, Records: []cache.Record{good}}
		mod(&c)
		dt, _ := json.Marshal(c)
		if _, err := Decode(dt); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Decode gave %v, want ErrInvalid", name, err)
		}
	}
	c := Config{Records: []cache.Record{good, {Key: cache.Key(strings.Repeat("b", 64)), Empty: true}}}
	dt, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(dt)
	if err != nil {
		t.Fatal(err)
	}
	c.Version = FormatVersion
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip: got %+v, want %+v", back, c)
	}
}

func TestInline(t *testing.T) {
	cfg := Config{Records: []cache.Record{{Key: cache.Key(strings.Repeat("c", 64)), Empty: true, Created: time.Unix(5, 0).UTC()}}}
	raw := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	out, err := AddInline(raw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, raw[:len(raw)-1]) {
		t.Errorf("the rest of the config changed:\n%s", out)
	}
	got, ok, err := ExtractInline(out)
	if err != nil || !ok || len(got.Records) != 1 || got.Records[0].Key != cfg.Records[0].Key {
		t.Fatalf("ExtractInline: %+v, %v, %v", got, ok, err)
	}
	if _, err := AddInline(out, cfg); err == nil {
		t.Error("a second inline cache was accepted")
	}
	if _, ok, err := ExtractInline(raw); ok || err != nil {
		t.Errorf("a config without a cache gave %v, %v", ok, err)
	}
	if out, err := AddInline([]byte("{}"), cfg); err != nil || !json.Valid(out) {
		t.Errorf("empty config: %s, %v", out, err)
	}
}

// testClient is a registry client with the default settings.
func testClient() *registry.Client { return registry.New(registry.Options{}) }

// storeWith returns a store holding two layers (one of them named by two
// records) and the cache config naming them.
func storeWith(t *testing.T) (*content.Store, Config) {
	t.Helper()
	s, err := content.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var recs []cache.Record
	for i, body := range []string{"first layer", "second layer"} {
		info, err := s.WriteLayer(context.Background(), func(w io.Writer) error {
			return tarOf(w, map[string]string{"f": body})
		}, content.LayerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, cache.Record{Key: cache.Key(strings.Repeat(string(rune('a'+i)), 64)), DiffID: info.DiffID, Digest: info.Digest,
			Size: info.Size, MediaType: info.MediaType, Created: time.Unix(int64(i), 0).UTC(), Preimage: json.RawMessage(`{"op":"run"}`)})
	}
	dup := recs[1]
	dup.Key = cache.Key(strings.Repeat("d", 64))
	recs = append(recs, dup, cache.Record{Key: cache.Key(strings.Repeat("e", 64)), Empty: true, Created: time.Unix(9, 0).UTC()})
	return s, Config{Records: recs}
}

// roundTrip exports cfg from src, imports it and fetches every blob into
// a new store, checking the metadata and the bytes.
func roundTrip(t *testing.T, spec, from Spec, src *content.Store, cfg Config) {
	t.Helper()
	ctx := context.Background()
	d, err := Export(ctx, spec, cfg, src, testClient())
	if err != nil {
		t.Fatal(err)
	}
	d2, err := Export(ctx, spec, cfg, src, testClient()) // idempotent
	if err != nil || d2 != d {
		t.Fatalf("second export: %s, %v; first %s", d2, err, d)
	}
	c, err := Import(ctx, from, testClient())
	if err != nil {
		t.Fatal(err)
	}
	if c.Manifest != d {
		t.Errorf("imported manifest %s, exported %s", c.Manifest, d)
	}
	cfg.Version = FormatVersion
	if !reflect.DeepEqual(c.Config, cfg) {
		t.Errorf("imported config:\n%+v\nwant\n%+v", c.Config, cfg)
	}
	dst, err := content.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range cfg.Records {
		if r.Empty {
			continue
		}
		if err := c.Fetch(ctx, dst, r.Digest); err != nil {
			t.Fatal(err)
		}
		a, _ := src.ReadBlob(r.Digest, 1<<20)
		b, err := dst.ReadBlob(r.Digest, 1<<20)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("blob %s differs after the round trip: %v", r.Digest, err)
		}
	}
	if err := c.Fetch(ctx, dst, hash("not in the cache")); err == nil {
		t.Error("fetching a blob the manifest does not list succeeded")
	}
}

func TestRoundTripRegistry(t *testing.T) {
	s, cfg := storeWith(t)
	ref := buildtest.Registry(t) + "/cache/app:buildcache"
	spec := Spec{Type: TypeRegistry, Ref: ref, Mode: ModeMax}
	roundTrip(t, spec, Spec{Type: TypeRegistry, Ref: ref}, s, cfg)
}

func TestRoundTripDockerRegistry(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{Auth: true})
	r.DockerConfig(t)
	s, cfg := storeWith(t)
	ref := r.Addr + "/cache/app:buildcache"
	roundTrip(t, Spec{Type: TypeRegistry, Ref: ref}, Spec{Type: TypeRegistry, Ref: ref}, s, cfg)
	// Only empty records: a manifest without layers.
	empty := Config{Records: cfg.Records[3:]}
	roundTrip(t, Spec{Type: TypeRegistry, Ref: ref + "-empty"}, Spec{Type: TypeRegistry, Ref: ref + "-empty"}, s, empty)
}

func TestRoundTripLocal(t *testing.T) {
	s, cfg := storeWith(t)
	dir := filepath.Join(t.TempDir(), "cache")
	roundTrip(t, Spec{Type: TypeLocal, Dir: dir, Tag: DefaultTag}, Spec{Type: TypeLocal, Dir: dir, Tag: DefaultTag}, s, cfg)
	// A second tag in the same directory leaves the first readable.
	other := Config{Records: cfg.Records[:1]}
	roundTrip(t, Spec{Type: TypeLocal, Dir: dir, Tag: "other"}, Spec{Type: TypeLocal, Dir: dir, Tag: "other"}, s, other)
	if _, err := Import(context.Background(), Spec{Type: TypeLocal, Dir: dir, Tag: DefaultTag}, testClient()); err != nil {
		t.Errorf("the first tag is gone: %v", err)
	}
	if _, err := Import(context.Background(), Spec{Type: TypeLocal, Dir: t.TempDir(), Tag: DefaultTag}, testClient()); err == nil {
		t.Error("importing from an empty directory succeeded")
	}
}

func TestRecompress(t *testing.T) {
	s, cfg := storeWith(t)
	dir := filepath.Join(t.TempDir(), "cache")
	ctx := context.Background()
	if _, err := Export(ctx, Spec{Type: TypeLocal, Dir: dir, Tag: DefaultTag, Compression: "zstd"}, cfg, s, testClient()); err != nil {
		t.Fatal(err)
	}
	c, err := Import(ctx, Spec{Type: TypeLocal, Dir: dir, Tag: DefaultTag}, testClient())
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range c.Config.Records {
		if r.Empty {
			continue
		}
		if r.MediaType != content.MediaTypeLayerZstd || r.DiffID != cfg.Records[i].DiffID || r.Digest == cfg.Records[i].Digest {
			t.Errorf("record %d: %+v, want a zstd layer with diff ID %s", i, r, cfg.Records[i].DiffID)
		}
	}
}

// TestTamperedBlob serves wrong bytes for one layer blob: the fetch must
// fail, say why, and store nothing.
func TestTamperedBlob(t *testing.T) {
	s, cfg := storeWith(t)
	bad := cfg.Records[0].Digest
	var mu sync.Mutex
	tamper := false
	host := buildtest.Registry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			on := tamper
			mu.Unlock()
			if on && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+bad.String()) {
				size := cfg.Records[0].Size
				w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
				w.Write(bytes.Repeat([]byte{'x'}, int(size)))
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	ref := host + "/cache/app:c"
	ctx := context.Background()
	if _, err := Export(ctx, Spec{Type: TypeRegistry, Ref: ref}, cfg, s, testClient()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	tamper = true
	mu.Unlock()
	c, err := Import(ctx, Spec{Type: TypeRegistry, Ref: ref}, testClient())
	if err != nil {
		t.Fatal(err)
	}
	dst, err := content.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = c.Fetch(ctx, dst, bad)
	if !errors.Is(err, content.ErrDigestMismatch) || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("tampered blob: got %v", err)
	}
	if dst.Has(bad) {
		t.Error("the tampered blob was stored")
	}
	if err := c.Fetch(ctx, dst, cfg.Records[1].Digest); err != nil {
		t.Errorf("an intact blob: %v", err)
	}
}

// TestImportRejects covers manifests that are not caches.
func TestImportRejects(t *testing.T) {
	host := buildtest.Registry(t)
	img := buildtest.BusyboxImage(t)
	buildtest.Push(t, host+"/plain:latest", img)
	_, err := Import(context.Background(), Spec{Type: TypeRegistry, Ref: host + "/plain:latest"}, testClient())
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "inline") {
		t.Errorf("an image without cache metadata: %v", err)
	}
	if _, err := Import(context.Background(), Spec{Type: TypeRegistry, Ref: host + "/missing:latest"}, testClient()); err == nil {
		t.Error("a missing reference imported")
	}
}

// TestInlineImport imports the records an image carries in its config.
func TestInlineImport(t *testing.T) {
	img := buildtest.BusyboxImage(t)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	l := m.Layers[0]
	cfg := Config{Records: []cache.Record{{Key: cache.Key(strings.Repeat("f", 64)), DiffID: cf.RootFS.DiffIDs[0], Digest: l.Digest, Size: l.Size,
		MediaType: string(l.MediaType), Created: time.Unix(1, 0).UTC()}}}
	raw, _ := img.RawConfigFile()
	withCache, err := AddInline(raw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	host := buildtest.Registry(t)
	ref := host + "/inline:latest"
	buildtest.Push(t, ref, &rawConfigImage{Image: img, raw: withCache})
	c, err := Import(context.Background(), Spec{Type: TypeRegistry, Ref: ref}, testClient())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Inline || len(c.Config.Records) != 1 || !c.Has(l.Digest) {
		t.Errorf("inline import: %+v", c)
	}
}

// rawConfigImage replaces an image's config bytes.
type rawConfigImage struct {
	v1.Image
	raw []byte
}

func (r *rawConfigImage) RawConfigFile() ([]byte, error) { return r.raw, nil }
func (r *rawConfigImage) ConfigName() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(r.raw))
	return h, err
}
func (r *rawConfigImage) Manifest() (*v1.Manifest, error) {
	m, err := r.Image.Manifest()
	if err != nil {
		return nil, err
	}
	m = m.DeepCopy()
	h, _ := r.ConfigName()
	m.Config.Digest, m.Config.Size = h, int64(len(r.raw))
	return m, nil
}
func (r *rawConfigImage) RawManifest() ([]byte, error) {
	m, err := r.Manifest()
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}
func (r *rawConfigImage) Digest() (v1.Hash, error) {
	raw, err := r.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	return h, err
}
func (r *rawConfigImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// tarOf writes a tar of regular files.
func tarOf(w io.Writer, files map[string]string) error {
	tw := tar.NewWriter(w)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, body); err != nil {
			return err
		}
	}
	return tw.Close()
}

// TestReadV1Export imports testdata/export-v1, a cache the code before
// Record was shared with the local store exported (two records, one of
// them empty, a cache mount and a checksum), and exports it again: the
// config and manifest come out byte for byte, so the digest is the same.
// The inline cache of testdata/inline-v1.json is read and written back the
// same way.
func TestReadV1Export(t *testing.T) {
	ctx := context.Background()
	const manifest = "sha256:d7d7a112ddbf420231965c6e075788e1625308687b6b676f86adf5015c16ae51"
	c, err := Import(ctx, Spec{Type: TypeLocal, Dir: "testdata/export-v1", Tag: DefaultTag}, testClient())
	if err != nil {
		t.Fatal(err)
	}
	if c.Manifest.String() != manifest {
		t.Errorf("manifest %s, want %s", c.Manifest, manifest)
	}
	recs := c.Config.Records
	if len(recs) != 2 || recs[0].Key != "3865da303f0f208b82036b7e9aa25dd8c5354966baffe0fb42bb5c721b006145" || recs[0].Size != 102 ||
		!recs[1].Empty || recs[1].Key != "929d1076b3742857f7774d582dad74d05d355be3921b1489b7eec8f6ec4e3060" ||
		len(c.Config.Mounts) != 1 || c.Config.Mounts[0].ID != "apt" || len(c.Config.Sums) != 1 {
		t.Fatalf("imported config: %+v", c.Config)
	}
	s := openTestStore(t)
	for _, d := range []v1.Hash{recs[0].Digest, c.Config.Mounts[0].Digest} {
		if err := c.Fetch(ctx, s, d); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	d, err := Export(ctx, Spec{Type: TypeLocal, Dir: dir, Tag: DefaultTag}, c.Config, s, testClient())
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != manifest {
		t.Errorf("exported again as %s, want %s", d, manifest)
	}
	for _, h := range []string{manifest, "sha256:45ddced6f8f3c7d78ea41311a7934231f34007dfb38435c74a046f4c11a0a3d3"} {
		hex := strings.TrimPrefix(h, "sha256:")
		old, _ := os.ReadFile(filepath.Join("testdata/export-v1/blobs/sha256", hex))
		now, err := os.ReadFile(filepath.Join(dir, "blobs/sha256", hex))
		if err != nil || !bytes.Equal(old, now) {
			t.Errorf("blob %s written again differs (%v):\n%s\nwas\n%s", h, err, now, old)
		}
	}

	inline, err := os.ReadFile("testdata/inline-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg, ok, err := ExtractInline(inline)
	if err != nil || !ok || len(cfg.Records) != 2 || cfg.Records[0].Key != recs[0].Key {
		t.Fatalf("ExtractInline: %+v, %v, %v", cfg, ok, err)
	}
	base, _, found := bytes.Cut(inline, []byte(`,"`+InlineField+`":`))
	if !found {
		t.Fatal("no inline field in testdata/inline-v1.json")
	}
	again, err := AddInline(append(bytes.Clone(base), '}'), cfg)
	if err != nil || !bytes.Equal(again, inline) {
		t.Errorf("inline cache written again (%v):\n%s\nwas\n%s", err, again, inline)
	}
}

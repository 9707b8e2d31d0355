package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"builder/build/buildtest"
	"builder/build/cacheio"
	"builder/build/progress"
	"builder/build/push/registrytest"
	"builder/build/registry"
	"builder/snapshot/content"
)

// cacheTo and cacheFrom add --cache-to / --cache-from values to a build.
func cacheTo(t testing.TB, specs ...string) func(*Options) {
	return func(o *Options) {
		for _, s := range specs {
			sp, err := cacheio.ParseExport(s)
			if err != nil {
				t.Fatal(err)
			}
			o.CacheTo = append(o.CacheTo, sp)
		}
	}
}

func cacheFrom(t testing.TB, specs ...string) func(*Options) {
	return func(o *Options) {
		for _, s := range specs {
			sp, err := cacheio.ParseImport(s)
			if err != nil {
				t.Fatal(err)
			}
			o.CacheFrom = append(o.CacheFrom, sp)
		}
	}
}

// loggedCached reports whether the step whose header contains header was
// CACHED in a plain progress log.
func loggedCached(t testing.TB, log, header string) bool {
	t.Helper()
	m := regexp.MustCompile(`(?m)^#(\d+) .*` + regexp.QuoteMeta(header)).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no step %q in the log:\n%s", header, log)
	}
	return regexp.MustCompile(`(?m)^#` + m[1] + ` CACHED$`).MatchString(log)
}

// ranFilesystemSteps lists the RUN, COPY, ADD and WORKDIR steps a plain
// progress log shows DONE rather than CACHED (an ONBUILD line registers a
// trigger and WORKDIR / creates nothing: metadata).
func ranFilesystemSteps(log string) []string {
	var ran []string
	for _, m := range regexp.MustCompile(`(?m)^#(\d+) \[[^\]]*\] ((?:RUN|COPY|ADD|WORKDIR)\b.*)$`).FindAllStringSubmatch(log, -1) {
		if m[2] != "WORKDIR /" && regexp.MustCompile(`(?m)^#`+m[1]+` DONE `).MatchString(log) {
			ran = append(ran, m[2])
		}
	}
	return ran
}

// checkComplete fails unless every blob of the image is in b's store.
func checkComplete(t testing.TB, b *Builder, img v1.Image) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if !b.Store().Has(l.Digest) {
			t.Errorf("image blob %s is not in the store", l.Digest)
		}
	}
}

// TestCacheRoundTrip builds on store A with --cache-to, then on an empty
// store B (another context directory, another base registry) with
// --cache-from: no step runs and the image is A's, byte for byte.
func TestCacheRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		ref  func(t *testing.T) (to, from string)
	}{
		{"ggcr-registry", func(t *testing.T) (string, string) {
			ref := buildtest.Registry(t) + "/cache/app:buildcache"
			return "type=registry,ref=" + ref + ",mode=max", ref
		}},
		{"docker-registry", func(t *testing.T) (string, string) {
			r := startRegistry(t)
			r.DockerConfig(t)
			ref := r.Addr + "/cache/app:buildcache"
			return "type=registry,ref=" + ref + ",mode=max", "type=registry,ref=" + ref
		}},
		{"ggcr-registry-pinned", func(t *testing.T) (string, string) {
			// --cache-from names the cache by digest (and a tag that
			// does not exist, which a digest overrides); the digest is
			// known once store A has exported.
			ref := buildtest.Registry(t) + "/cache/app:buildcache"
			return "type=registry,ref=" + ref + ",mode=max", "pin:" + ref
		}},
		{"local", func(t *testing.T) (string, string) {
			dir := filepath.Join(t.TempDir(), "cache")
			return "type=local,dest=" + dir + ",mode=max", "type=local,src=" + dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			to, from := tc.ref(t)
			a := newFixture(t)
			resA, logA := a.mustBuild(copyCase(t, "builds/cacheio-multi"), cacheTo(t, to))
			if !strings.Contains(logA, "exporting cache to ") {
				t.Errorf("no export line in the log:\n%s", logA)
			}
			if ref, ok := strings.CutPrefix(from, "pin:"); ok {
				from = "type=registry,ref=" + pinnedRef(t, ref)
			}
			b := newFixture(t)
			resB, logB := b.mustBuild(copyCase(t, "builds/cacheio-multi"), cacheFrom(t, from))
			if !strings.Contains(logB, "importing cache manifest from ") {
				t.Errorf("no import line in the log:\n%s", logB)
			}
			if resB.Cached != resB.Steps {
				t.Errorf("store B ran %d of %d steps:\n%s", resB.Steps-resB.Cached, resB.Steps, logB)
			}
			if resB.ManifestDigest != resA.ManifestDigest {
				t.Errorf("store B built %s, store A %s", resB.ManifestDigest, resA.ManifestDigest)
			}
			checkComplete(t, b.b, resB.Image)
			// Records whose blobs were fetched are now local; the build
			// stage's, never fetched, are not.
			_, log := b.mustBuild(copyCase(t, "builds/cacheio-multi"))
			if !loggedCached(t, log, "[deps 2/2] RUN") || loggedCached(t, log, "[build 2/2] RUN") {
				t.Errorf("rebuild on B without --cache-from:\n%s", log)
			}
		})
	}
}

// pinnedRef returns "repo:no-such-tag@digest" for the manifest that ref, on
// a plain HTTP registry, names now.
func pinnedRef(t testing.TB, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(r)
	if err != nil {
		t.Fatalf("head %s: %v", ref, err)
	}
	return r.Context().Name() + ":no-such-tag@" + desc.Digest.String()
}

// startRegistry starts Debian's docker-registry with htpasswd auth.
func startRegistry(t *testing.T) *registrytest.Registry {
	t.Helper()
	buildtest.RequireTool(t, registrytest.Binary)
	buildtest.RequireTool(t, "htpasswd")
	return registrytest.Start(t, registrytest.Options{Auth: true})
}

// TestCacheFromMirror imports --cache-from from a registry that is
// reachable only as the mirror registries.toml lists for it (the cache
// reference names a closed loopback port): every step is a hit, as a FROM
// pull from that registry would work.
func TestCacheFromMirror(t *testing.T) {
	mirror := buildtest.Registry(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := l.Addr().String()
	l.Close()
	a := newFixture(t)
	resA, _ := a.mustBuild(copyCase(t, "builds/cacheio-multi"), cacheTo(t, "type=registry,ref="+mirror+"/hub/cache/app:c,mode=max"))
	conf, err := registry.Parse(fmt.Sprintf("[registry.%q]\n  mirrors = [%q]\n", origin, mirror+"/hub"))
	if err != nil {
		t.Fatal(err)
	}
	b := newFixture(t)
	b.rc = registry.New(registry.Options{Config: conf})
	b.b = b.open()
	resB, logB := b.mustBuild(copyCase(t, "builds/cacheio-multi"), cacheFrom(t, "type=registry,ref="+origin+"/cache/app:c"))
	if strings.Contains(logB, "WARNING") || resB.Cached != resB.Steps {
		t.Errorf("ran %d of %d steps with the cache on the mirror:\n%s", resB.Steps-resB.Cached, resB.Steps, logB)
	}
	if resB.ManifestDigest != resA.ManifestDigest {
		t.Errorf("built %s through the mirror, %s with --cache-to", resB.ManifestDigest, resA.ManifestDigest)
	}
	checkComplete(t, b.b, resB.Image)
}

// TestCacheModes: mode=min carries the final image's steps only, so a
// stage-only step misses; mode=max carries every stage's steps.
func TestCacheModes(t *testing.T) {
	host := buildtest.Registry(t)
	a := newFixture(t)
	resA, _ := a.mustBuild(copyCase(t, "builds/cacheio-multi"),
		cacheTo(t, "type=registry,ref="+host+"/c:min", "type=registry,ref="+host+"/c:max,mode=max"))

	bmin := newFixture(t)
	_, log := bmin.mustBuild(copyCase(t, "builds/cacheio-multi"), cacheFrom(t, host+"/c:min"))
	if loggedCached(t, log, "[build 2/2] RUN") {
		t.Errorf("mode=min: the stage-only RUN hit:\n%s", log)
	}
	if !loggedCached(t, log, "[deps 2/2] RUN") {
		t.Errorf("mode=min: the RUN of the stage the image is FROM-built on missed:\n%s", log)
	}

	bmax := newFixture(t)
	res, log := bmax.mustBuild(copyCase(t, "builds/cacheio-multi"), cacheFrom(t, host+"/c:max"))
	if !loggedCached(t, log, "[build 2/2] RUN") || res.Cached != res.Steps || res.ManifestDigest != resA.ManifestDigest {
		t.Errorf("mode=max: %d/%d cached, %s (A: %s):\n%s", res.Cached, res.Steps, res.ManifestDigest, resA.ManifestDigest, log)
	}

	// Several caches: the first that has a step serves it; a missing one
	// is a warning, not an error.
	both := newFixture(t)
	res, log = both.mustBuild(copyCase(t, "builds/cacheio-multi"),
		cacheFrom(t, host+"/c:missing", host+"/c:min", "type=registry,ref="+host+"/c:max"))
	if res.Cached != res.Steps || res.ManifestDigest != resA.ManifestDigest || !strings.Contains(log, "WARNING: import cache "+host+"/c:missing") {
		t.Errorf("min, then max: %d/%d cached, %s (A: %s):\n%s", res.Cached, res.Steps, res.ManifestDigest, resA.ManifestDigest, log)
	}
}

// blobGets counts GET requests for blobs, by digest.
type blobGets struct {
	mu     sync.Mutex
	gets   map[string]int
	tamper string // a digest whose content is served wrong
}

func (g *blobGets) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			if i := strings.Index(r.URL.Path, "/blobs/"); i >= 0 {
				d := r.URL.Path[i+len("/blobs/"):]
				g.mu.Lock()
				g.gets[d]++
				bad := d == g.tamper
				g.mu.Unlock()
				if bad {
					rec := &captureWriter{header: http.Header{}}
					h.ServeHTTP(rec, r)
					for k, v := range rec.header {
						w.Header()[k] = v
					}
					body := []byte(rec.body.String())
					for i := range body {
						body[i] ^= 0xff
					}
					w.WriteHeader(rec.code)
					w.Write(body)
					return
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}

type captureWriter struct {
	header http.Header
	body   strings.Builder
	code   int
}

func (c *captureWriter) Header() http.Header         { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) { return c.body.Write(b) }
func (c *captureWriter) WriteHeader(code int)        { c.code = code }

// TestCacheLazy: a fully cached build from an imported cache fetches only
// the blobs its image needs; the layer of the stage only a bind mount
// reads stays in the registry.
func TestCacheLazy(t *testing.T) {
	for _, dir := range []string{"builds/cacheio-multi", "builds/cacheio-copyfrom"} {
		t.Run(filepath.Base(dir), func(t *testing.T) { testCacheLazy(t, dir) })
	}
}

func testCacheLazy(t *testing.T, dir string) {
	g := &blobGets{gets: map[string]int{}}
	ref := buildtest.Registry(t, g.wrap) + "/c:max"
	a := newFixture(t)
	resA, _ := a.mustBuild(copyCase(t, dir), cacheTo(t, "type=registry,ref="+ref+",mode=max"))

	c, err := cacheio.Import(context.Background(), cacheio.Spec{Type: cacheio.TypeRegistry, Ref: ref}, registry.New(registry.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := resA.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	inImage := map[string]bool{}
	for _, l := range m.Layers {
		inImage[l.Digest.String()] = true
	}
	unneeded := 0
	for _, r := range c.Config.Records {
		if !r.Empty && !inImage[r.Digest.String()] {
			unneeded++
		}
	}
	if unneeded == 0 {
		t.Fatal("the cache holds no layer outside the image: the test proves nothing")
	}
	g.mu.Lock()
	g.gets = map[string]int{}
	g.mu.Unlock()

	b := newFixture(t)
	res, log := b.mustBuild(copyCase(t, dir), cacheFrom(t, ref))
	if res.Cached != res.Steps || res.ManifestDigest != resA.ManifestDigest {
		t.Fatalf("%d/%d cached, %s (A: %s):\n%s", res.Cached, res.Steps, res.ManifestDigest, resA.ManifestDigest, log)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	recordBlob := map[string]bool{}
	for _, r := range c.Config.Records {
		recordBlob[r.Digest.String()] = true
	}
	layers := 0
	for d, n := range g.gets {
		switch {
		case inImage[d]:
			layers++
			if n != 1 {
				t.Errorf("image layer %s fetched %d times", d, n)
			}
		case recordBlob[d]:
			t.Errorf("blob %s, which no output needs, was fetched", d)
		}
	}
	if layers == 0 {
		t.Error("no image layer was fetched from the cache")
	}
	checkComplete(t, b.b, res.Image)
}

// TestCacheInline: an image written with --cache-to type=inline and pushed
// serves as --cache-from on an empty store.
func TestCacheInline(t *testing.T) {
	ref := buildtest.Registry(t) + "/app:latest"
	a := newFixture(t)
	resA, _ := a.mustBuild(copyCase(t, "builds/slice"), cacheTo(t, "type=inline"))
	raw, err := resA.Image.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := cacheio.ExtractInline(raw); !ok || err != nil {
		t.Fatalf("no inline cache in the config: %v", err)
	}
	buildtest.Push(t, ref, resA.Image)

	b := newFixture(t)
	res, log := b.mustBuild(copyCase(t, "builds/slice"), cacheFrom(t, ref), cacheTo(t, "type=inline"))
	if res.Cached != res.Steps || res.ManifestDigest != resA.ManifestDigest {
		t.Errorf("%d/%d cached, %s (A: %s):\n%s", res.Cached, res.Steps, res.ManifestDigest, resA.ManifestDigest, log)
	}
	checkComplete(t, b.b, res.Image)
}

// imageFile returns the content of path in the image's top-most layer that
// has it, and whether any layer has anything under prefix.
func imageFile(t testing.TB, img v1.Image, path, prefix string) (string, bool) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var content string
	under := false
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimPrefix(h.Name, "./")
			if strings.HasPrefix(name, prefix) && strings.TrimSuffix(name, "/") != strings.TrimSuffix(prefix, "/") {
				under = true
			}
			if name == path {
				dt, _ := io.ReadAll(tr)
				content = string(dt)
			}
		}
		rc.Close()
	}
	return content, under
}

// TestCacheMounts: with cache-mounts=true the contents of a cache mount
// travel with the cache and are restored on a store that has none; they
// never enter an image layer.
func TestCacheMounts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	a := newFixture(t)
	resA, _ := a.mustBuild(copyCase(t, "builds/cacheio-mounts"), cacheTo(t, "type=local,dest="+dir+",cache-mounts=true"))
	if seen, under := imageFile(t, resA.Image, "seen", "var/cache/pkgs/"); seen != "1\n" || under {
		t.Fatalf("store A: /seen %q, cache content in a layer: %v", seen, under)
	}

	b := newFixture(t)
	res, log := b.mustBuild(copyCase(t, "builds/cacheio-mounts"), cacheFrom(t, "type=local,src="+dir),
		func(o *Options) { o.BuildArgs["N"] = "2" })
	seen, under := imageFile(t, res.Image, "seen", "var/cache/pkgs/")
	if seen != "1\n2\n" {
		t.Errorf("store B's RUN saw %q in the cache mount, want the imported line then its own:\n%s", seen, log)
	}
	if under {
		t.Error("cache mount content entered an image layer")
	}
	if owner, _ := imageFile(t, res.Image, "owner", ""); owner != "1000:750\n" {
		t.Errorf("restored cache mount owner and mode %q, want 1000:750", owner)
	}
	mdir, _ := b.b.cacheMounts.Paths("pkgs")
	if dt, err := os.ReadFile(filepath.Join(mdir, "log")); err != nil || string(dt) != "1\n2\n" {
		t.Errorf("store B's cache mount: %q, %v", dt, err)
	}

	// The store's own content wins over the import.
	res, _ = b.mustBuild(copyCase(t, "builds/cacheio-mounts"), cacheFrom(t, "type=local,src="+dir),
		func(o *Options) { o.BuildArgs["N"] = "3" })
	if seen, _ := imageFile(t, res.Image, "seen", ""); seen != "1\n2\n3\n" {
		t.Errorf("a store with its own cache mount content saw %q", seen)
	}

	// Without cache-mounts=true nothing of the mount is exported.
	dir2 := filepath.Join(t.TempDir(), "cache")
	a.mustBuild(copyCase(t, "builds/cacheio-mounts"), cacheTo(t, "type=local,dest="+dir2))
	c, err := cacheio.Import(context.Background(), cacheio.Spec{Type: cacheio.TypeLocal, Dir: dir2, Tag: cacheio.DefaultTag}, registry.New(registry.Options{}))
	if err != nil || len(c.Config.Mounts) != 0 {
		t.Errorf("cache without cache-mounts=true: %+v, %v", c, err)
	}
}

// TestCacheTampered: a cache blob whose bytes do not match its digest fails
// the build with a clear error and is not stored.
func TestCacheTampered(t *testing.T) {
	g := &blobGets{gets: map[string]int{}}
	ref := buildtest.Registry(t, g.wrap) + "/c:t"
	a := newFixture(t)
	resA, _ := a.mustBuild(copyCase(t, "builds/slice"), cacheTo(t, "type=registry,ref="+ref))
	m, err := resA.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	bad := m.Layers[len(m.Layers)-2].Digest // a layer of a build step
	g.mu.Lock()
	g.tamper = bad.String()
	g.mu.Unlock()

	b := newFixture(t)
	_, log, err := b.build(copyCase(t, "builds/slice"), cacheFrom(t, ref))
	if err == nil || !errors.Is(err, content.ErrDigestMismatch) || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("build from a tampered cache: %v\n%s", err, log)
	}
	if b.b.Store().Has(bad) {
		t.Error("the tampered blob was stored")
	}
}

// TestCacheIdenticalImages: for every deterministic build case, a cold
// build, a fully cached rebuild and a build on an empty store from the
// exported cache give one image. Extend the table with new cases; the
// conformance cases that build alone are added unless -short is given.
func TestCacheIdenticalImages(t *testing.T) {
	type identCase struct {
		name string
		dir  func(t *testing.T) string
		opts func(t *testing.T, f *fixture, dir string) []func(*Options)
		// sameBase builds B from A's base registry: the case's build args
		// name the registry, which is then a real input of its steps.
		sameBase bool
	}
	plain := func(name string) identCase {
		return identCase{name: name, dir: func(t *testing.T) string { return copyCase(t, "builds/"+name) }}
	}
	cases := []identCase{plain("repro"), plain("slice"), plain("heredoc"), plain("parallel"), plain("deleted"),
		plain("store"), plain("explain"), plain("rebuild"), plain("cacheio-multi"),
		{name: "mounts", dir: func(t *testing.T) string { return copyCase(t, "builds/mounts") },
			opts: func(t *testing.T, _ *fixture, _ string) []func(*Options) { return []func(*Options){secretOption(t)} }}}
	if _, err := os.Stat(conformanceDir); err == nil && !testing.Short() {
		for _, c := range conformanceCases(t) {
			if c.Base != "" || len(c.Env) > 0 || len(c.Contexts) > 0 || len(c.Expect.Error) > 0 {
				continue // built on another case's image, needs the process env or named contexts, or fails by design
			}
			cases = append(cases, identCase{name: "conformance/" + c.Name, sameBase: true,
				dir: func(t *testing.T) string { return c.prepare(t) },
				opts: func(_ *testing.T, f *fixture, dir string) []func(*Options) {
					o := c.options(f, dir)
					return []func(*Options){func(x *Options) {
						x.BuildArgs, x.Target, x.Network, x.Platform, x.Secrets, x.Allow = o.BuildArgs, o.Target, o.Network, o.Platform, o.Secrets, o.Allow
						x.Dockerfile = o.Dockerfile
					}}
				}})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cache := filepath.Join(t.TempDir(), "cache")
			a := newFixture(t)
			dirA := tc.dir(t)
			var optsA []func(*Options)
			if tc.opts != nil {
				optsA = tc.opts(t, a, dirA)
			}
			cold, _ := a.mustBuild(dirA, append(optsA, cacheTo(t, "type=local,dest="+cache+",mode=max"))...)
			warm, log := a.mustBuild(dirA, optsA...)
			if warm.Cached != warm.Steps || warm.ManifestDigest != cold.ManifestDigest {
				t.Errorf("rebuild: %d/%d cached, %s (cold %s):\n%s", warm.Cached, warm.Steps, warm.ManifestDigest, cold.ManifestDigest, log)
			}
			b := newFixture(t)
			if tc.sameBase {
				b.base = a.base
			}
			dirB := tc.dir(t)
			var optsB []func(*Options)
			if tc.opts != nil {
				optsB = tc.opts(t, b, dirB)
			}
			imp, log := b.mustBuild(dirB, append(optsB, cacheFrom(t, "type=local,src="+cache))...)
			// A stage of metadata steps alone is a first build in store B:
			// its steps are done, not cached; no filesystem step may run.
			if ran := ranFilesystemSteps(log); len(ran) > 0 || imp.ManifestDigest != cold.ManifestDigest {
				t.Errorf("from the imported cache: ran %q, %s (cold %s):\n%s", ran, imp.ManifestDigest, cold.ManifestDigest, log)
			}
			checkComplete(t, b.b, imp.Image)
		})
	}
}

// TestImportStateOnJob checks that a build's imports travel on the job, not
// in a context: ensureChain under a context that carries nothing of the
// build still fetches a --cache-from hit's blob (and then keeps the record
// locally). While the state rode in the build's context, this lookup found
// no imports and the unpack failed for want of the blob.
func TestImportStateOnJob(t *testing.T) {
	b, err := New(Config{Root: t.TempDir(), Snapshotter: "naive", GCKeepStorage: -1})
	if err != nil {
		t.Fatal(err)
	}
	j := &job{b: b, progress: progress.New(io.Discard, progress.Quiet),
		o: Options{CacheFrom: []cacheio.Spec{{Type: cacheio.TypeLocal, Dir: "cacheio/testdata/export-v1", Tag: cacheio.DefaultTag}}}}
	j.startCache(context.Background())
	const key = "3865da303f0f208b82036b7e9aa25dd8c5354966baffe0fb42bb5c721b006145" // its record names a layer
	r, ok := j.lookup(key)
	if !ok || r.Empty {
		t.Fatalf("lookup of an imported record: %+v, %v", r, ok)
	}
	if b.Store().Has(r.Digest) {
		t.Fatal("the blob was fetched before anything needed it")
	}
	chain, err := j.ensureChain(context.Background(), []layerRef{{DiffID: r.DiffID, Digest: r.Digest, Size: r.Size, MediaType: r.MediaType}})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Snapshotter().Exists(context.Background(), chain) {
		t.Errorf("snapshot %s was not made", chain)
	}
	if _, ok, err := b.cache.Get(key); !ok || err != nil {
		t.Errorf("the fetched record was not kept locally: %v, %v", ok, err)
	}
}

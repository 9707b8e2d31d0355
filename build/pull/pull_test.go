package pull

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	bregistry "builder/build/registry"
	"builder/export"
	"builder/internal/testenv"
	"builder/snapshot/content"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

const (
	testUser = "builder"
	testPass = "s3cret"
)

// testRegistry is ggcr's in-memory registry on a loopback address, counting
// the requests it gets.
type testRegistry struct {
	host     string
	requests atomic.Int64 // all requests
	blobGets atomic.Int64 // GET /v2/…/blobs/…
}

// startRegistry serves a registry on ip (a loopback address), its handler
// wrapped by wrap if not nil.
func startRegistry(t *testing.T, ip string, wrap func(http.Handler) http.Handler) *testRegistry {
	t.Helper()
	reg := &testRegistry{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reg.requests.Add(1)
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			reg.blobGets.Add(1)
		}
		inner.ServeHTTP(w, r)
	})
	if wrap != nil {
		h = wrap(h)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		testenv.Skip(t, "listen on %s: %v", ip, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	reg.host = l.Addr().String()
	return reg
}

// push uploads img (or an index) as repoTag, authenticating in case the
// registry wants it.
func (r *testRegistry) push(t *testing.T, repoTag string, img any) {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: testUser, Password: testPass})
	switch x := img.(type) {
	case v1.Image:
		err = remote.Write(ref, x, auth)
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, x, auth)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (r *testRegistry) reset() {
	r.requests.Store(0)
	r.blobGets.Store(0)
}

// hermetic points the default keychain at an empty Docker config.
func hermetic(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
}

func openStore(t *testing.T) *content.Store {
	t.Helper()
	s, err := content.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randomImage(t *testing.T, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(2048, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testPull pulls ref into s with a client of settings ro (default the zero
// Options) and returns the digest and the image as stored.
func testPull(ctx context.Context, s *content.Store, ref string, o Options, ro ...bregistry.Options) (v1.Hash, v1.Image, error) {
	var c bregistry.Options
	if len(ro) > 0 {
		c = ro[0]
	}
	d, err := Pull(ctx, bregistry.New(c), s, ref, o)
	if err != nil {
		return d, nil, err
	}
	img, err := export.LoadImage(s, d)
	return d, img, err
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPull(t *testing.T) {
	hermetic(t)
	reg := startRegistry(t, "127.0.0.1", nil)
	img := randomImage(t, 3)
	reg.push(t, "test/img:latest", img)
	want := mustDigest(t, img)
	s := openStore(t)

	var mu sync.Mutex
	var msgs []string
	opts := Options{Progress: func(m string) { mu.Lock(); msgs = append(msgs, m); mu.Unlock() }}
	reg.reset()
	d, pimg, err := testPull(context.Background(), s, reg.host+"/test/img", opts)
	if err != nil {
		t.Fatal(err)
	}
	if d != want || mustDigest(t, pimg) != want {
		t.Fatalf("pulled %s, want %s", d, want)
	}
	if err := validate.Image(pimg); err != nil {
		t.Errorf("validate: %v", err)
	}
	m, _ := img.Manifest()
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if !s.Has(desc.Digest) {
			t.Errorf("blob %s not in the store", desc.Digest)
		}
	}
	if n := reg.blobGets.Load(); n != 4 {
		t.Errorf("first pull fetched %d blobs, want 4", n)
	}
	if len(msgs) == 0 || !strings.HasPrefix(msgs[len(msgs)-1], "pulled "+reg.host+"/test/img:latest@") {
		t.Errorf("progress = %q", msgs)
	}

	// Pulling again asks for the manifest but fetches no blob.
	reg.reset()
	if d2, _, err := testPull(context.Background(), s, reg.host+"/test/img:latest", Options{}); err != nil || d2 != want {
		t.Fatalf("second pull = %s, %v", d2, err)
	}
	if n := reg.blobGets.Load(); n != 0 {
		t.Errorf("second pull fetched %d blobs", n)
	}
	if reg.requests.Load() == 0 {
		t.Error("second pull by tag did not ask the registry for the tag")
	}

	// A digest reference whose image is complete needs no request at all.
	reg.reset()
	if d3, _, err := testPull(context.Background(), s, reg.host+"/test/img@"+want.String(), Options{}); err != nil || d3 != want {
		t.Fatalf("pull by digest = %s, %v", d3, err)
	}
	if n := reg.requests.Load(); n != 0 {
		t.Errorf("pull by digest of a stored image made %d requests", n)
	}
}

func TestPullOtherLoopbackAddress(t *testing.T) {
	hermetic(t)
	reg := startRegistry(t, "127.0.0.2", nil)
	img := randomImage(t, 1)
	reg.push(t, "x:1", img)
	d, _, err := testPull(context.Background(), openStore(t), reg.host+"/x:1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d != mustDigest(t, img) {
		t.Errorf("pulled %s", d)
	}
}

func TestPullIndex(t *testing.T) {
	hermetic(t)
	reg := startRegistry(t, "127.0.0.1", nil)
	amd64, arm64 := randomImage(t, 2), randomImage(t, 2)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	reg.push(t, "multi:latest", idx)
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		platform v1.Platform
		want     v1.Image
		other    v1.Image
		wantErr  string
	}{
		{"default", v1.Platform{}, amd64, arm64, ""},
		{"arm64", v1.Platform{OS: "linux", Architecture: "arm64"}, arm64, amd64, ""},
		{"arm64 v8", v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, arm64, amd64, ""},
		{"missing", v1.Platform{OS: "linux", Architecture: "s390x"}, nil, nil,
			"pull " + reg.host + "/multi:latest: no image for platform linux/s390x (index has linux/amd64, linux/arm64/v8)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			d, _, err := testPull(context.Background(), s, reg.host+"/multi", Options{Platform: tt.platform})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d != mustDigest(t, tt.want) {
				t.Fatalf("pulled %s, want %s", d, mustDigest(t, tt.want))
			}
			om, _ := tt.other.Manifest()
			for _, l := range om.Layers {
				if s.Has(l.Digest) {
					t.Errorf("layer %s of the other platform was fetched", l.Digest)
				}
			}
			// The index digest now resolves offline.
			reg.reset()
			d2, _, err := testPull(context.Background(), s, reg.host+"/multi@"+idxDigest.String(), Options{Platform: tt.platform})
			if err != nil || d2 != d {
				t.Fatalf("pull by index digest = %s, %v", d2, err)
			}
			if n := reg.requests.Load(); n != 0 {
				t.Errorf("pull by stored index digest made %d requests", n)
			}
		})
	}
}

// corruptBlob flips a byte in the body of GET requests for blob d.
func corruptBlob(d v1.Hash) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
				w = &flipWriter{ResponseWriter: w}
			}
			next.ServeHTTP(w, r)
		})
	}
}

type flipWriter struct {
	http.ResponseWriter
	done bool
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if f.done || len(p) == 0 {
		return f.ResponseWriter.Write(p)
	}
	f.done = true
	q := bytes.Clone(p)
	q[len(q)/2] ^= 0xff
	return f.ResponseWriter.Write(q)
}

func TestPullCorruptBlob(t *testing.T) {
	hermetic(t)
	img := randomImage(t, 2)
	m, _ := img.Manifest()
	bad := m.Layers[1].Digest
	reg := startRegistry(t, "127.0.0.1", corruptBlob(bad))
	reg.push(t, "test/img:latest", img)
	s := openStore(t)
	_, _, err := testPull(context.Background(), s, reg.host+"/test/img", Options{}, bregistry.Options{Backoff: fastBackoff()})
	if !errors.Is(err, content.ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	prefix := "pull " + reg.host + "/test/img:latest: blob " + bad.String() + ": "
	if msg := err.Error(); !strings.HasPrefix(msg, prefix) || strings.Contains(msg, "\n") {
		t.Errorf("error %q does not start with %q", msg, prefix)
	}
	if s.Has(bad) {
		t.Error("corrupt blob stored")
	}
	if s.Has(mustDigest(t, img)) {
		t.Error("manifest stored although a blob failed")
	}
}

func TestPullErrors(t *testing.T) {
	hermetic(t)
	reg := startRegistry(t, "127.0.0.1", nil)
	reg.push(t, "test/img:latest", randomImage(t, 1))
	authReg := startRegistry(t, "127.0.0.1", basicAuth)
	authReg.push(t, "test/img:latest", randomImage(t, 1))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	tests := []struct {
		ref    string
		want   string
		status int // the *transport.Error's status code the error wraps; 0 for none
	}{
		{reg.host + "/test/img:nope", "pull " + reg.host + "/test/img:nope: manifest unknown (no such tag or digest)", http.StatusNotFound},
		{closed + "/x:latest", "pull " + closed + "/x:latest: connection refused", 0},
		{authReg.host + "/test/img", "pull " + authReg.host + "/test/img:latest: unauthorized: authentication required", http.StatusUnauthorized},
		{"UPPER/case", "pull UPPER/case: ", 0},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			s := openStore(t)
			_, _, err := testPull(context.Background(), s, tt.ref, Options{})
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.want) || strings.Contains(msg, "\n") ||
				(!strings.HasSuffix(tt.want, ": ") && msg != tt.want) {
				t.Errorf("err = %q\nwant %q", msg, tt.want)
			}
			var terr *transport.Error
			if got := errors.As(err, &terr); got != (tt.status != 0) || (got && terr.StatusCode != tt.status) {
				t.Errorf("errors.As(*transport.Error) = %v (%+v), want status %d", got, terr, tt.status)
			}
		})
	}
}

// basicAuth lets through requests with the test credentials only.
func basicAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != testUser || p != testPass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func TestPullAuthFromDockerConfig(t *testing.T) {
	reg := startRegistry(t, "127.0.0.1", basicAuth)
	img := randomImage(t, 2)
	reg.push(t, "private/img:v1", img)
	tmpl, err := os.ReadFile("testdata/docker-config.json.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := strings.ReplaceAll(string(tmpl), "REGISTRY", reg.host)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	d, pimg, err := testPull(context.Background(), openStore(t), reg.host+"/private/img:v1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d != mustDigest(t, img) {
		t.Errorf("pulled %s", d)
	}
	if err := validate.Image(pimg); err != nil {
		t.Errorf("validate: %v", err)
	}
}

func TestPullCancelled(t *testing.T) {
	hermetic(t)
	reg := startRegistry(t, "127.0.0.1", nil)
	reg.push(t, "test/img:latest", randomImage(t, 1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := testPull(ctx, openStore(t), reg.host+"/test/img", Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// TestPullTagAndDigest: in "name:tag@digest" the digest pins the image, as
// in Docker; a digest the registry lacks fails even when the tag exists.
func TestPullTagAndDigest(t *testing.T) {
	hermetic(t)
	reg := startRegistry(t, "127.0.0.1", nil)
	img := randomImage(t, 1)
	reg.push(t, "test/img:latest", img)
	other := randomImage(t, 1)
	reg.push(t, "test/img:other", other)
	want := mustDigest(t, img)
	s := openStore(t)
	// The tag names another image: the digest wins.
	d, _, err := testPull(context.Background(), s, reg.host+"/test/img:other@"+want.String(), Options{})
	if err != nil || d != want {
		t.Fatalf("pull tag@digest = %s, %v; want %s", d, err, want)
	}
	missing := "sha256:" + strings.Repeat("0", 64)
	if _, _, err := testPull(context.Background(), s, reg.host+"/test/img:latest@"+missing, Options{}); err == nil ||
		!strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("pull of an existing tag with a missing digest: %v", err)
	}
}

// TestPullCredHelper: credentials from a credential helper named in the
// docker config's credHelpers, as go-containerregistry's keychain runs it.
func TestPullCredHelper(t *testing.T) {
	reg := startRegistry(t, "127.0.0.1", basicAuth)
	img := randomImage(t, 1)
	reg.push(t, "private/img:v1", img)
	bin := t.TempDir()
	helper := "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"" + testUser + "\",\"Secret\":\"" + testPass + "\"}' \"$server\"\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-buildertest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	dir := t.TempDir()
	cfg := `{"credHelpers": {"` + reg.host + `": "buildertest"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	d, _, err := testPull(context.Background(), openStore(t), reg.host+"/private/img:v1", Options{})
	if err != nil || d != mustDigest(t, img) {
		t.Fatalf("pull with a credential helper = %s, %v", d, err)
	}
	// Without the helper's answer the registry refuses.
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-buildertest"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := testPull(context.Background(), openStore(t), reg.host+"/private/img:v1", Options{}); err == nil {
		t.Error("pull succeeded though the credential helper gave nothing")
	}
}

// TestConfig: Config resolves a tag through an index to the platform's
// image and returns its config, fetching one blob (the config, stored),
// never a layer; a missing image is an *Error naming it.
func TestConfig(t *testing.T) {
	hermetic(t)
	reg := startRegistry(t, "127.0.0.1", nil)
	arm := randomImage(t, 2)
	cf, err := arm.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config.Env = "linux", "arm64", []string{"GOPATH=/go"}
	if arm, err = mutate.ConfigFile(arm, cf); err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: randomImage(t, 1), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	reg.push(t, "test/multi:1", idx)
	s := openStore(t)
	reg.reset()
	got, err := Config(context.Background(), bregistry.New(bregistry.Options{}), s, reg.host+"/test/multi:1", Options{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Architecture != "arm64" || len(got.Config.Env) != 1 || got.Config.Env[0] != "GOPATH=/go" {
		t.Errorf("config %+v", got)
	}
	if n := reg.blobGets.Load(); n != 1 {
		t.Errorf("%d blob GETs, want 1 (the config)", n)
	}
	cd, _ := arm.ConfigName()
	if !s.Has(cd) {
		t.Errorf("config %s not stored", cd)
	}
	ls, _ := arm.Layers()
	for _, l := range ls {
		if d, _ := l.Digest(); s.Has(d) {
			t.Errorf("layer %s fetched", d)
		}
	}
	_, err = Config(context.Background(), bregistry.New(bregistry.Options{}), s, reg.host+"/test/missing:1", Options{})
	var pe *Error
	if !errors.As(err, &pe) || pe.Ref != reg.host+"/test/missing:1" {
		t.Errorf("missing image: %v", err)
	}
}

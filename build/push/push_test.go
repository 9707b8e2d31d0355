package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"builder/build/pull/faultproxy"
	"builder/build/push/registrytest"
	"builder/build/registry"
	"builder/internal/testenv"
	"builder/snapshot/content"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// recorder is a transport that logs requests and can inject faults: of the
// requests for which match is true, every other one fails, up to fail
// faults, alternately with a 500 and a connection reset.
type recorder struct {
	mu      sync.Mutex
	log     []string
	match   func(*http.Request) bool
	fail    int
	failed  int
	seen    int
	mounted int
	hit     map[string]bool // requests already failed once
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.log = append(r.log, req.Method+" "+req.URL.Path+"?"+req.URL.RawQuery)
	inject := false
	if r.match != nil && r.match(req) {
		// Each request fails at most once (unless failing forever), so
		// that however concurrent uploads interleave, no request meets
		// more faults in a row than the retry budget allows.
		r.seen++
		key := req.Method + " " + req.URL.Path
		inject = r.failed < r.fail && (!r.hit[key] || r.fail > 1<<20)
		if r.hit == nil {
			r.hit = map[string]bool{}
		}
		r.hit[key] = true
	}
	if inject {
		r.failed++
	}
	n := r.failed
	r.mu.Unlock()
	if inject {
		if req.Body != nil {
			io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}
		if n%2 == 0 {
			return nil, fmt.Errorf("injected: %w", syscall.ECONNRESET)
		}
		return &http.Response{StatusCode: 500, Status: "500 Internal Server Error", Request: req,
			Header: http.Header{}, Body: io.NopCloser(strings.NewReader("injected"))}, nil
	}
	resp, err := remote.DefaultTransport.RoundTrip(req)
	if err == nil && req.Method == http.MethodPost && req.URL.Query().Get("mount") != "" && resp.StatusCode == http.StatusCreated {
		r.mu.Lock()
		r.mounted++
		r.mu.Unlock()
	}
	return resp, err
}

// count returns how many requests matched method and path substring.
func (r *recorder) count(method, sub string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.log {
		if strings.HasPrefix(l, method+" ") && strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log, r.mounted = nil, 0
}

func fastBackoff() *remote.Backoff {
	return &remote.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Steps: 4}
}

// skopeoDigest returns the manifest digest skopeo reads for ref.
func skopeoDigest(t *testing.T, ref string, creds string) string {
	t.Helper()
	skopeo, ok := testenv.OptionalTool(t, "skopeo")
	if !ok {
		return ""
	}
	args := []string{"inspect", "--tls-verify=false"}
	if creds != "" {
		args = append(args, "--creds", creds)
	}
	out, err := exec.Command(skopeo, append(args, "docker://"+ref)...).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo inspect %s: %v\n%s", ref, err, out)
	}
	var got struct{ Digest string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return got.Digest
}

func TestPushRoundTrip(t *testing.T) {
	for _, auth := range []bool{false, true} {
		t.Run(fmt.Sprintf("auth=%v", auth), func(t *testing.T) {
			reg := registrytest.Start(t, registrytest.Options{Auth: auth})
			reg.DockerConfig(t)
			img, err := random.Image(64<<10, 3)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := img.Digest()
			rec := &recorder{}
			refs := []string{reg.Addr + "/app:1", reg.Addr + "/app:2", reg.Addr + "/other:1"}
			var lines []string
			opts := Options{Progress: func(s string) { lines = append(lines, s) }}
			c := registry.New(registry.Options{Transport: rec, Backoff: fastBackoff()})
			res, err := Push(context.Background(), c, img, refs, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 3 || res[2].Digest != want {
				t.Errorf("results = %+v", res)
			}
			// Blobs went up once: the second repository mounted them.
			if rec.mounted != 3 { // the config is small and always uploaded
				t.Errorf("%d cross-repository mounts, want 3\n%s", rec.mounted, strings.Join(rec.log, "\n"))
			}
			if n := rec.count("PUT", "/v2/app/blobs/uploads/"); n != 4 {
				t.Errorf("%d blob uploads to app, want 4", n)
			}
			creds := ""
			if auth {
				creds = reg.User + ":" + reg.Password
			}
			for _, ref := range refs {
				if d := skopeoDigest(t, ref, creds); d != "" && d != want.String() {
					t.Errorf("skopeo reads %s as %s, want %s", ref, d, want)
				}
			}
			// A second push finds every blob and uploads nothing.
			rec.reset()
			if _, err := Push(context.Background(), c, img, refs, opts); err != nil {
				t.Fatal(err)
			}
			if n := rec.count("POST", "/blobs/uploads/") + rec.count("PUT", "/blobs/"); n != 0 {
				t.Errorf("second push made %d uploads\n%s", n, strings.Join(rec.log, "\n"))
			}
			if len(lines) == 0 || !strings.Contains(lines[len(lines)-1], "pushed ") {
				t.Errorf("progress = %q", lines)
			}
		})
	}
}

func TestPushErrors(t *testing.T) {
	open := registrytest.Start(t, registrytest.Options{})
	authed := registrytest.Start(t, registrytest.Options{Auth: true})
	img, _ := random.Image(1024, 1)
	wrong := authn.NewMultiKeychain(staticKeychain{authn.AuthConfig{Username: authed.User, Password: "wrong"}})
	d, _ := img.Digest()
	tests := []struct {
		name, ref string
		keychain  authn.Keychain
		want      string
	}{
		{"no credentials", authed.Addr + "/app:1", authn.NewMultiKeychain(), "unauthorized"},
		{"wrong credentials", authed.Addr + "/app:1", wrong, "unauthorized"},
		{"unknown host", "no-such-host.invalid/app:1", nil, "cannot resolve no-such-host.invalid"},
		{"nothing listening", "127.0.0.1:1/app:1", nil, "connection refused"},
		{"bad name", "UPPER/app", nil, "could not parse reference"},
		{"other digest", open.Addr + "/app@sha256:" + strings.Repeat("0", 64), nil, "the image's digest is " + d.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Push(context.Background(), registry.New(registry.Options{Keychain: tt.keychain, Backoff: fastBackoff()}), img, []string{tt.ref}, Options{})
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("err = %v, want *Error", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "push ") || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("error = %q, want one line with %q", msg, tt.want)
			}
		})
	}
}

type staticKeychain struct{ cfg authn.AuthConfig }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.FromConfig(k.cfg), nil
}

func TestPushRetries(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	img, _ := random.Image(32<<10, 2)
	want, _ := img.Digest()
	uploads := func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/blobs/") || strings.Contains(r.URL.Path, "/manifests/")
	}
	// A few faults: retried away.
	rec := &recorder{match: uploads, fail: 6}
	res, err := Push(context.Background(), registry.New(registry.Options{Transport: rec, Backoff: fastBackoff()}), img, []string{reg.Addr + "/retry:1"}, Options{})
	if err != nil {
		t.Fatalf("push with %d injected faults: %v", rec.fail, err)
	}
	if rec.failed != 6 || res[0].Digest != want {
		t.Errorf("failed %d, result %+v", rec.failed, res)
	}
	r, _ := name.ParseReference(reg.Addr+"/retry:1", name.Insecure)
	got, err := remote.Get(r)
	if err != nil || got.Digest != want {
		t.Errorf("registry has %v, %v", got, err)
	}
	// Faults without end: a clear error after the retry budget.
	rec = &recorder{match: uploads, fail: 1 << 30}
	start := time.Now()
	_, err = Push(context.Background(), registry.New(registry.Options{Transport: rec, Backoff: fastBackoff()}), img, []string{reg.Addr + "/retry:2"}, Options{})
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line", err)
	}
	t.Logf("gave up after %d requests, %v: %v", rec.failed, time.Since(start), err)
}

// TestPushFaults pushes through a proxy that fails blob commits and
// manifest uploads on a schedule: bounded faults are retried away, endless
// ones end in one line naming the reference.
func TestPushFaults(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.DockerConfig(t)
	tests := []struct {
		name    string
		commits []faultproxy.Fault // of each blob's completing PUT
		then    faultproxy.Fault
		wantErr string
	}{
		{"500 and reset", []faultproxy.Fault{faultproxy.Status500, faultproxy.Reset}, faultproxy.Pass, ""},
		{"503 three times", []faultproxy.Fault{faultproxy.Status503, faultproxy.Status503, faultproxy.Status503}, faultproxy.Pass, ""},
		{"503 forever", nil, faultproxy.Status503, "503 Service Unavailable"},
		{"resets forever", nil, faultproxy.Reset, "connection reset"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A new image each time: the registry has none of its blobs.
			img, err := random.Image(48<<10, 3)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := img.Digest()
			px := faultproxy.Start(t, reg.Addr,
				faultproxy.Rule{Match: faultproxy.BlobCommits, Key: faultproxy.ByDigest, Faults: tt.commits, Then: tt.then},
				faultproxy.Rule{Match: faultproxy.ManifestPuts, Faults: []faultproxy.Fault{faultproxy.Status503}})
			ref := fmt.Sprintf("%s/faults:%d", px.Addr, i)
			start := time.Now()
			_, err = Push(context.Background(), registry.New(registry.Options{Backoff: fastBackoff()}), img, []string{ref}, Options{})
			if tt.wantErr != "" {
				if err == nil {
					t.Fatal("push succeeded through endless faults")
				}
				msg := err.Error()
				t.Logf("error after %v: %s", time.Since(start), msg)
				// One line naming the reference, the registry, the blob
				// and the tries.
				if !strings.HasPrefix(msg, "push "+ref+": upload blob sha256:") || !strings.Contains(msg, " to "+px.Addr+"/faults: giving up after 4 tries: ") ||
					!strings.Contains(msg, tt.wantErr) || strings.Contains(msg, "\n") {
					t.Errorf("error = %q\nwant one line naming %s, the blob and the tries, with %q", msg, ref, tt.wantErr)
				}
				if d := time.Since(start); d > 20*time.Second {
					t.Errorf("gave up after %v: not bounded by the backoff", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			if n := px.Injected(faultproxy.Status503) + px.Injected(faultproxy.Status500) + px.Injected(faultproxy.Reset); n < 4 {
				t.Errorf("only %d faults injected", n)
			}
			r, _ := name.ParseReference(fmt.Sprintf("%s/faults:%d", reg.Addr, i), name.Insecure)
			got, err := remote.Get(r)
			if err != nil || got.Digest != want {
				t.Fatalf("registry has %v, %v", got, err)
			}
			if _, err := remote.Image(r); err != nil {
				t.Error(err)
			}
		})
	}
}

// gate is a transport that holds every blob upload until a second one is
// in flight (or a safety timeout passes, for a pusher that never sends two
// at once), recording the most uploads in flight together.
type gate struct {
	mu       sync.Mutex
	inflight int
	max      int
	two      chan struct{}
	once     sync.Once
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	upload := (req.Method == http.MethodPatch || req.Method == http.MethodPut) && strings.Contains(req.URL.Path, "/blobs/uploads/")
	if upload {
		g.mu.Lock()
		g.inflight++
		g.max = max(g.max, g.inflight)
		if g.inflight >= 2 {
			g.once.Do(func() { close(g.two) })
		}
		g.mu.Unlock()
		select {
		case <-g.two:
		case <-time.After(10 * time.Second):
		}
		defer func() {
			g.mu.Lock()
			g.inflight--
			g.mu.Unlock()
		}()
	}
	return remote.DefaultTransport.RoundTrip(req)
}

// TestPushParallel checks that blobs go up several at once.
func TestPushParallel(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.DockerConfig(t)
	img, err := random.Image(256<<10, 4)
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{two: make(chan struct{})}
	if _, err := Push(context.Background(), registry.New(registry.Options{Transport: g, Jobs: 4}), img, []string{reg.Addr + "/parallel:1"}, Options{}); err != nil {
		t.Fatal(err)
	}
	if g.max < 2 {
		t.Errorf("at most %d blob uploads in flight, want several", g.max)
	}
}

// TestPushIgnoresMirrors pushes to a registry the configuration gives a
// mirror: the image goes to the registry named, and the mirror (a live
// registry that counts requests) is never asked.
func TestPushIgnoresMirrors(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	var mirrorRequests atomic.Int64
	mirrorReg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mirrorRequests.Add(1)
		mirrorReg.ServeHTTP(w, r)
	}))
	t.Cleanup(mirror.Close)
	origin := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(origin.Close)
	mhost, ohost := strings.TrimPrefix(mirror.URL, "http://"), strings.TrimPrefix(origin.URL, "http://")
	cfg, err := registry.Parse(fmt.Sprintf("[registry.%q]\n  mirrors = [%q]\n", ohost, mhost))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(1024, 2)
	want, _ := img.Digest()
	c := registry.New(registry.Options{Config: cfg, Backoff: fastBackoff()})
	if _, err := Push(context.Background(), c, img, []string{ohost + "/app:1"}, Options{}); err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(ohost+"/app:1", name.Insecure)
	if got, err := remote.Get(r); err != nil || got.Digest != want {
		t.Errorf("the registry named has %v, %v; want %s", got, err, want)
	}
	if n := mirrorRequests.Load(); n != 0 {
		t.Errorf("the mirror got %d requests from a push", n)
	}
}

// TestPushSpacedResets pushes through a proxy that resets every 4th
// request, whatever it is (HEAD, POST, PATCH, PUT, token or manifest):
// every one of them is retried, and the registry ends up with the image.
func TestPushSpacedResets(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	for _, f := range []faultproxy.Fault{faultproxy.Reset, faultproxy.Status500, faultproxy.Status503} {
		t.Run(f.String(), func(t *testing.T) {
			img, err := random.Image(256<<10, 4)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := img.Digest()
			px := faultproxy.Start(t, reg.Addr, faultproxy.Rule{Match: faultproxy.Any, Key: faultproxy.All, Then: f, Every: 4})
			ref := px.Addr + "/spaced/" + f.String() + ":1"
			// Uploads run concurrently, so which request of a blob's
			// session draws the fault is chance: a session fails about one
			// time in four, and four failed sessions in a row (the default
			// steps) happened about once in fifty runs. Eight steps make
			// that vanishingly rare without hiding a push that never retries.
			bo := fastBackoff()
			bo.Steps = 8
			res, err := Push(context.Background(), registry.New(registry.Options{Backoff: bo}), img, []string{ref}, Options{})
			if err != nil {
				t.Fatalf("push with every 4th request failing: %v", err)
			}
			if res[0].Digest != want {
				t.Errorf("pushed %s, want %s", res[0].Digest, want)
			}
			if px.Injected(f) < 3 {
				t.Errorf("only %d faults injected", px.Injected(f))
			}
			r, _ := name.ParseReference(reg.Addr+"/spaced/"+f.String()+":1", name.Insecure)
			if got, err := remote.Image(r); err != nil {
				t.Fatal(err)
			} else if d, _ := got.Digest(); d != want {
				t.Errorf("registry has %s, want %s", d, want)
			}
		})
	}
}

// TestPushCorruptBlob pushes an image one of whose layer blobs was damaged
// in the store: the push fails naming the blob and builder check, and the
// broken upload is not retried.
func TestPushCorruptBlob(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	dir := t.TempDir()
	img := benchImage(t, dir, 2, 256<<10)
	m, _ := img.Manifest()
	bad := m.Layers[1].Digest
	p := filepath.Join(dir, "blobs", "sha256", bad.Hex)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	_, err = Push(context.Background(), registry.New(registry.Options{Transport: rec, Backoff: fastBackoff()}), img, []string{reg.Addr + "/corrupt:1"}, Options{})
	if !errors.Is(err, content.ErrCorrupt) || !strings.Contains(err.Error(), bad.String()) || !strings.Contains(err.Error(), "builder check") {
		t.Fatalf("err = %v, want a corrupt-blob error naming %s", err, bad)
	}
	if n := rec.count("PATCH", "/blobs/uploads/"); n > 3 {
		t.Errorf("%d blob bodies sent for a config and 2 layers: the corrupt one was retried", n)
	}
	if n := rec.count("PUT", "/manifests/"); n != 0 {
		t.Errorf("a manifest was written")
	}
}

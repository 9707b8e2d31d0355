package pull

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"builder/build/pull/faultproxy"
	bregistry "builder/build/registry"
	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func fastBackoff() *remote.Backoff {
	return &remote.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 4}
}

// TestPullFaults pulls through a proxy that breaks blob downloads on a
// schedule: bounded faults are retried away; endless ones fail with one
// line naming the blob, and nothing broken is stored.
func TestPullFaults(t *testing.T) {
	hermetic(t)
	reg := startRegistry(t, "127.0.0.1", nil)
	img := randomImage(t, 3)
	reg.push(t, "test/img:latest", img)
	want := mustDigest(t, img)
	m, _ := img.Manifest()
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	const F = faultproxy.Pass
	tests := []struct {
		name    string
		faults  []faultproxy.Fault
		then    faultproxy.Fault
		wantErr string // "" for success
		gets    int    // GETs each blob path sees; 0: not checked
	}{
		{"500 then 503", []faultproxy.Fault{faultproxy.Status500, faultproxy.Status503}, F, "", 3},
		{"resets", []faultproxy.Fault{faultproxy.Reset, faultproxy.Reset}, F, "", 0},
		{"truncated twice", []faultproxy.Fault{faultproxy.Truncate, faultproxy.Truncate}, F, "", 3},
		{"corrupt once", []faultproxy.Fault{faultproxy.Corrupt}, F, "", 2},
		{"mixed", []faultproxy.Fault{faultproxy.Status503, faultproxy.Truncate, faultproxy.Reset, faultproxy.Corrupt}, F, "", 5},
		{"truncated forever", nil, faultproxy.Truncate,
			"giving up after 3 attempts: read body: connection closed before the body was complete", 3},
		{"503 forever", nil, faultproxy.Status503, "giving up after 4 attempts: registry answered 503 Service Unavailable", 4},
		{"resets forever", nil, faultproxy.Reset, "giving up after 4 attempts: connection reset", 0},
		{"wrong content", nil, faultproxy.Corrupt, "giving up after 3 attempts: ", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			px := faultproxy.Start(t, reg.host, faultproxy.Rule{Match: faultproxy.BlobGets, Faults: tt.faults, Then: tt.then})
			s := openStore(t)
			var lines []string
			opts := Options{Progress: func(l string) { lines = append(lines, l) }}
			ro := bregistry.Options{Backoff: fastBackoff()}
			ref := px.Addr + "/test/img:latest"
			d, pimg, err := testPull(context.Background(), s, ref, opts, ro)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				if d != want || mustDigest(t, pimg) != want {
					t.Errorf("pulled %s, want %s", d, want)
				}
			} else {
				if err == nil {
					t.Fatal("pull succeeded through endless faults")
				}
				msg := err.Error()
				t.Logf("error: %s", msg)
				if !strings.HasPrefix(msg, "pull "+ref+": blob sha256:") || !strings.Contains(msg, tt.wantErr) || strings.Contains(msg, "\n") {
					t.Errorf("error = %q\nwant one line naming the blob, with %q", msg, tt.wantErr)
				}
				if tt.then == faultproxy.Corrupt && !errors.Is(err, content.ErrDigestMismatch) {
					t.Errorf("error = %v, want ErrDigestMismatch", err)
				}
				if s.Has(want) {
					t.Error("manifest stored although blobs failed")
				}
			}
			for _, b := range blobs {
				if tt.wantErr != "" && s.Has(b.Digest) {
					t.Errorf("blob %s stored although every fetch was broken", b.Digest)
				}
				// A failure cancels the other downloads: only the blob
				// the error names has certainly used its whole budget.
				n := px.Seen(0, "/v2/test/img/blobs/"+b.Digest.String())
				named := err != nil && strings.Contains(err.Error(), b.Digest.String())
				if tt.gets != 0 && (n > tt.gets || (n != tt.gets && (err == nil || named))) {
					t.Errorf("blob %s: %d GETs, want %d", b.Digest, n, tt.gets)
				}
				if tt.wantErr == "" {
					if size, err := s.Size(b.Digest); err != nil || size != b.Size {
						t.Errorf("blob %s: stored size %d, %v", b.Digest, size, err)
					}
				}
			}
			t.Logf("%d progress lines; last: %q", len(lines), lines[len(lines)-1])
		})
	}
}

// mirrorConfig writes testdata/mirrors.toml.tmpl with the given addresses
// and loads it.
func mirrorConfig(t *testing.T, repl ...string) *bregistry.Config {
	t.Helper()
	tmpl, err := os.ReadFile("testdata/mirrors.toml.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	p := t.TempDir() + "/registries.toml"
	if err := os.WriteFile(p, []byte(strings.NewReplacer(repl...).Replace(string(tmpl))), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := bregistry.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPullMirrors pulls docker.io/library/busybox through loopback mirrors
// (the network is never used): a dead mirror and one without the image are
// passed over, the third serves it; a registry whose mirrors all fail is
// pulled from directly.
func TestPullMirrors(t *testing.T) {
	hermetic(t)
	live := startRegistry(t, "127.0.0.1", nil)
	img := randomImage(t, 2)
	live.push(t, "hub/library/busybox:latest", img)
	want := mustDigest(t, img)
	empty := startRegistry(t, "127.0.0.1", nil)
	flaky := startRegistry(t, "127.0.0.1", nil)
	flaky.push(t, "x/img:1", img)
	origin := startRegistry(t, "127.0.0.1", nil)
	origin.push(t, "x/img:1", img)
	dead := closedAddr(t)
	cfg := mirrorConfig(t, "DEAD", dead, "EMPTY", empty.host, "LIVE", live.host, "ORIGIN", origin.host)

	s := openStore(t)
	var lines []string
	opts := Options{Progress: func(l string) { lines = append(lines, l) }}
	ro := bregistry.Options{Config: cfg, Backoff: fastBackoff()}
	d, _, err := testPull(context.Background(), s, "busybox", opts, ro)
	if err != nil {
		t.Fatalf("pull through mirrors: %v\n%s", err, strings.Join(lines, "\n"))
	}
	if d != want {
		t.Errorf("pulled %s, want %s", d, want)
	}
	got := strings.Join(lines, "\n")
	for _, w := range []string{
		"mirror " + dead + ": connection refused; trying the next source",
		"mirror " + empty.host + "/hub: repository not found; trying the next source",
		"pulled docker.io/library/busybox:latest@" + want.String() + " from mirror " + live.host + "/hub",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("progress lacks %q:\n%s", w, got)
		}
	}
	if n := live.blobGets.Load(); n != 3 {
		t.Errorf("live mirror served %d blobs, want 3", n)
	}

	// Every mirror fails: the registry itself serves the image.
	s = openStore(t)
	origin.reset()
	if d, _, err := testPull(context.Background(), s, origin.host+"/x/img:1", opts, ro); err != nil || d != want {
		t.Fatalf("pull past a dead mirror = %s, %v", d, err)
	}
	if n := origin.blobGets.Load(); n != 3 {
		t.Errorf("origin served %d blobs, want 3", n)
	}

	// A mirror answering 5xx falls through too; its partial blobs are
	// valid and kept, and the origin serves the rest.
	px := faultproxy.Start(t, flaky.host, faultproxy.Rule{Match: func(r *http.Request) bool {
		return faultproxy.BlobGets(r) && strings.HasSuffix(r.URL.Path, mustLayer(t, img, 1).String())
	}, Then: faultproxy.Status503})
	cfg = mirrorConfig(t, "DEAD", px.Addr, "EMPTY", empty.host, "LIVE", live.host, "ORIGIN", origin.host)
	s = openStore(t)
	origin.reset()
	ro.Config = cfg
	if d, _, err := testPull(context.Background(), s, origin.host+"/x/img:1", opts, ro); err != nil || d != want {
		t.Fatalf("pull past a failing mirror = %s, %v", d, err)
	}
	if n := origin.blobGets.Load(); n != 1 {
		t.Errorf("origin served %d blobs after the mirror had served 2, want 1", n)
	}

	// When every source fails, the error is the registry's own.
	_, _, err = testPull(context.Background(), openStore(t), origin.host+"/x/img:nope", opts, ro)
	if err == nil || !strings.HasPrefix(err.Error(), "pull "+origin.host+"/x/img:nope: manifest unknown") {
		t.Errorf("err = %v, want the origin's error", err)
	}
}

func mustLayer(t *testing.T, img v1.Image, i int) v1.Hash {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m.Layers[i].Digest
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

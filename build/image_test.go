package build

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/buildtest"
)

// manifestGate wraps a registry so that tests can count manifest GETs and
// hold them until released.
type manifestGate struct {
	gets    atomic.Int32
	hold    atomic.Bool
	arrived chan struct{} // receives once per held request
	release chan struct{} // closed to let held requests through
}

func (m *manifestGate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
			m.gets.Add(1)
			if m.hold.Load() {
				m.arrived <- struct{}{}
				<-m.release
			}
		}
		h.ServeHTTP(w, r)
	})
}

func imageTestBuilder(t *testing.T) (*Builder, string, *manifestGate) {
	t.Helper()
	gate := &manifestGate{arrived: make(chan struct{}, 4), release: make(chan struct{})}
	host := buildtest.Registry(t, gate.wrap)
	ref := host + "/busybox:latest"
	buildtest.Push(t, ref, buildtest.BusyboxImage(t))
	b, err := New(Config{Root: t.TempDir(), Snapshotter: "naive", GCKeepStorage: -1})
	if err != nil {
		t.Fatal(err)
	}
	gate.gets.Store(0)
	return b, ref, gate
}

// TestResolveImageFirstCallerCancelled checks that a build that gives up on
// a pull does not cancel it for another build waiting for the same image.
func TestResolveImageFirstCallerCancelled(t *testing.T) {
	b, ref, gate := imageTestBuilder(t)
	o := Options{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}}
	joined := make(chan imageKey, 2)
	b.pulls.OnJoin(func(k imageKey) { joined <- k })
	gate.hold.Store(true)

	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	err1 := make(chan error, 1)
	go func() {
		_, err := (&job{b: b, o: o}).resolveImage(ctx1, ref, o.Platform) // one build
		err1 <- err
	}()
	<-joined
	<-gate.arrived // the pull is under way
	type result struct {
		img *baseImage
		err error
	}
	res2 := make(chan result, 1)
	go func() {
		img, err := (&job{b: b, o: o}).resolveImage(context.Background(), ref, o.Platform) // another
		res2 <- result{img, err}
	}()
	<-joined
	cancel1()
	if err := <-err1; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: got %v, want context.Canceled", err)
	}
	gate.hold.Store(false)
	close(gate.release)
	r := <-res2
	if r.err != nil {
		t.Fatalf("second caller: %v", r.err)
	}
	if len(r.img.layers) != 1 {
		t.Fatalf("second caller: %d layers, want 1", len(r.img.layers))
	}
}

// TestResolveImagePullAgain checks that --pull asks the registry again
// after an earlier resolution on the same Builder, and that without --pull
// the stored image is used.
func TestResolveImagePullAgain(t *testing.T) {
	b, ref, gate := imageTestBuilder(t)
	o := Options{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}}
	if _, err := (&job{b: b, o: o}).resolveImage(context.Background(), ref, o.Platform); err != nil {
		t.Fatal(err)
	}
	n := gate.gets.Load()
	if n == 0 {
		t.Fatal("the first resolution did not pull")
	}
	if _, err := (&job{b: b, o: o}).resolveImage(context.Background(), ref, o.Platform); err != nil {
		t.Fatal(err)
	}
	if got := gate.gets.Load(); got != n {
		t.Fatalf("without --pull the stored image was not used: %d manifest GETs, want %d", got, n)
	}
	o.Pull = true
	if _, err := (&job{b: b, o: o}).resolveImage(context.Background(), ref, o.Platform); err != nil {
		t.Fatal(err)
	}
	if got := gate.gets.Load(); got == n {
		t.Fatal("--pull did not ask the registry again")
	}
}

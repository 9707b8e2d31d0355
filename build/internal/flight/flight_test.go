package flight

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// TestCancelledCallerLeavesOthers checks that the caller that started a
// call can give up without cancelling it for a caller that still waits.
func TestCancelledCallerLeavesOthers(t *testing.T) {
	var g Group[string, int]
	joined := make(chan string, 2)
	g.OnJoin(func(k string) { joined <- k })
	started, release := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	fn := func(ctx context.Context) (int, error) {
		runs.Add(1)
		close(started)
		select {
		case <-release:
			return 42, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	err1 := make(chan error, 1)
	go func() {
		_, err := g.Do(ctx1, "k", fn)
		err1 <- err
	}()
	<-joined
	<-started
	res2 := make(chan int, 1)
	err2 := make(chan error, 1)
	go func() {
		v, err := g.Do(context.Background(), "k", fn)
		res2 <- v
		err2 <- err
	}()
	<-joined
	cancel1()
	if err := <-err1; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: got %v, want context.Canceled", err)
	}
	close(release)
	if v, err := <-res2, <-err2; err != nil || v != 42 {
		t.Fatalf("second caller: got %d, %v; want 42, nil", v, err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("fn ran %d times, want 1", n)
	}
}

// TestLastCallerCancels checks that the call is cancelled once nobody
// waits, and that a later caller starts a new call rather than joining it.
func TestLastCallerCancels(t *testing.T) {
	var g Group[string, int]
	started := make(chan struct{})
	cancelled := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := g.Do(ctx, "k", func(ctx context.Context) (int, error) {
			close(started)
			<-ctx.Done()
			close(cancelled)
			return 0, ctx.Err()
		})
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	<-cancelled // the shared call saw its context cancelled
	v, err := g.Do(context.Background(), "k", func(context.Context) (int, error) { return 7, nil })
	if err != nil || v != 7 {
		t.Fatalf("later caller: got %d, %v; want 7, nil (a new call)", v, err)
	}
}

// TestKeysAreSeparate checks that calls under different keys do not share
// a result, and that a finished call is not remembered.
func TestKeysAreSeparate(t *testing.T) {
	var g Group[string, string]
	for _, k := range []string{"a", "b", "a"} {
		v, err := g.Do(context.Background(), k, func(context.Context) (string, error) { return k, nil })
		if err != nil || v != k {
			t.Fatalf("Do(%q) = %q, %v", k, v, err)
		}
	}
	if len(g.calls) != 0 {
		t.Fatalf("%d calls left behind", len(g.calls))
	}
}

// TestValuesKept checks that fn sees the first caller's context values.
func TestValuesKept(t *testing.T) {
	type key struct{}
	var g Group[int, any]
	ctx := context.WithValue(context.Background(), key{}, "v")
	v, err := g.Do(ctx, 1, func(ctx context.Context) (any, error) { return ctx.Value(key{}), nil })
	if err != nil || v != "v" {
		t.Fatalf("got %v, %v", v, err)
	}
}

package build

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"builder/build/cache"
)

// TestSharedSteps: a caller that arrives while a step runs takes its
// record; after a failure a caller whose build goes on runs the step
// itself; a cancelled waiter returns at once while the step runs on.
func TestSharedSteps(t *testing.T) {
	key := cache.Key("k")
	boom := errors.New("boom")
	for _, tc := range []struct {
		name     string
		firstErr error
		cancel   bool
		wantRan  bool
		runs     int32
	}{
		{name: "shared", runs: 1},
		{name: "first fails", firstErr: boom, wantRan: true, runs: 2},
		{name: "waiter cancelled", cancel: true, runs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sharedSteps
			joined := make(chan struct{})
			s.joined = func(cache.Key) { close(joined) }
			started, release := make(chan struct{}), make(chan struct{})
			var runs atomic.Int32
			firstDone := make(chan error)
			go func() {
				_, ran, err := s.do(context.Background(), key, func() (cache.Record, error) {
					runs.Add(1)
					close(started)
					<-release
					return cache.Record{Key: "first"}, tc.firstErr
				})
				if err == nil && !ran {
					err = errors.New("first caller did not run")
				}
				firstDone <- err
			}()
			<-started
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				rec cache.Record
				ran bool
				err error
			}
			second := make(chan result)
			go func() {
				rec, ran, err := s.do(ctx, key, func() (cache.Record, error) {
					runs.Add(1)
					return cache.Record{Key: "second"}, nil
				})
				second <- result{rec, ran, err}
			}()
			<-joined
			if tc.cancel {
				cancel()
				if r := <-second; !errors.Is(r.err, context.Canceled) {
					t.Errorf("cancelled waiter: %+v", r)
				}
			}
			close(release)
			if err := <-firstDone; err != tc.firstErr {
				t.Errorf("first: %v", err)
			}
			if !tc.cancel {
				r := <-second
				wantKey := cache.Key("first")
				if tc.wantRan {
					wantKey = "second"
				}
				if r.err != nil || r.ran != tc.wantRan || r.rec.Key != wantKey {
					t.Errorf("second: %+v", r)
				}
			}
			if n := runs.Load(); n != tc.runs {
				t.Errorf("%d runs, want %d", n, tc.runs)
			}
		})
	}
}

package build

import (
	"context"
	"sync"

	"builder/build/cache"
)

// sharedSteps runs each step key once at a time across the jobs of a
// Builder (the platforms of a multi-platform build share every step whose
// key is the same). Unlike flight.Group, the step runs in its caller's
// goroutine under the caller's context, so a cancelled build returns only
// after its step has cleaned up (its sandbox torn down, its snapshot
// removed).
type sharedSteps struct {
	mu    sync.Mutex
	calls map[cache.Key]*sharedStep

	joined func(cache.Key) // tests: called when a caller starts to wait
}

type sharedStep struct {
	done chan struct{}
	rec  cache.Record
	err  error
}

// do returns the record of key: run's, or that of a call for key that
// was running when do was called (ran is then false). A waiter whose own
// context is still live runs the step itself when that call failed.
func (s *sharedSteps) do(ctx context.Context, key cache.Key, run func() (cache.Record, error)) (rec cache.Record, ran bool, err error) {
	for {
		s.mu.Lock()
		if s.calls == nil {
			s.calls = map[cache.Key]*sharedStep{}
		}
		c, ok := s.calls[key]
		if !ok {
			c = &sharedStep{done: make(chan struct{})}
			s.calls[key] = c
			s.mu.Unlock()
			c.rec, c.err = run()
			s.mu.Lock()
			delete(s.calls, key)
			s.mu.Unlock()
			close(c.done)
			return c.rec, true, c.err
		}
		joined := s.joined
		s.mu.Unlock()
		if joined != nil {
			joined(key)
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return cache.Record{}, false, ctx.Err()
		}
		if c.err == nil {
			return c.rec, false, nil
		}
		if ctx.Err() != nil {
			return cache.Record{}, false, c.err
		}
		// The other call failed (or was cancelled) but this build goes
		// on: run the step here.
	}
}

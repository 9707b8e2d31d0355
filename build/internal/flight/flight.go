// Package flight runs one call per key at a time and shares its result
// with every caller that asks for the same key while it runs, like
// golang.org/x/sync/singleflight, but with cancellation that belongs to
// the callers: each caller returns as soon as its own context is done, and
// the shared call is cancelled only when every caller has gone.
//
// Results are not remembered: a caller that arrives after a call has
// finished starts a new one. Callers that want a different result (say, a
// fresh pull instead of a stored image) must ask under a different key.
package flight

import (
	"context"
	"sync"
)

// Group runs calls keyed by K that return V. The zero Group is ready to
// use; a Group must not be copied after first use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]

	joined func(K) // see OnJoin
}

// OnJoin sets a function that Do calls with the key each time a caller
// has become a waiter of a call, before it waits. Tests use it to order
// their callers without sleeping; it must not call back into g.
func (g *Group[K, V]) OnJoin(f func(K)) {
	g.mu.Lock()
	g.joined = f
	g.mu.Unlock()
}

// call is one run of a function and the callers waiting for it.
type call[V any] struct {
	done    chan struct{} // closed when val and err are set
	val     V
	err     error
	waiters int                // callers still waiting; guarded by Group.mu
	cancel  context.CancelFunc // cancels the call's context
}

// Do returns the result of fn for key, running fn unless a call for key is
// already running, in which case it waits for that call's result. fn runs
// in a goroutine of its own under a context that carries the first
// caller's values but not its cancellation; that context is cancelled once
// no caller waits for the result any more, and a later caller then starts
// afresh. Do returns ctx's error when ctx is done before the result.
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func(context.Context) (V, error)) (V, error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[K]*call[V]{}
	}
	c, ok := g.calls[key]
	if !ok {
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call[V]{done: make(chan struct{}), cancel: cancel}
		g.calls[key] = c
		go g.run(cctx, key, c, fn)
	}
	c.waiters++
	joined := g.joined
	g.mu.Unlock()
	if joined != nil {
		joined(key)
	}
	select {
	case <-c.done:
		g.leave(key, c)
		return c.val, c.err
	case <-ctx.Done():
		g.leave(key, c)
		var zero V
		return zero, ctx.Err()
	}
}

// run calls fn and publishes its result to the waiters of c.
func (g *Group[K, V]) run(ctx context.Context, key K, c *call[V], fn func(context.Context) (V, error)) {
	c.val, c.err = fn(ctx)
	g.mu.Lock()
	if g.calls[key] == c {
		delete(g.calls, key)
	}
	g.mu.Unlock()
	c.cancel()
	close(c.done)
}

// leave takes one waiter off c; the last one to leave cancels c (a no-op
// once it has finished) and forgets it, so that nobody joins a call that
// is being cancelled.
func (g *Group[K, V]) leave(key K, c *call[V]) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c.waiters--
	if c.waiters > 0 {
		return
	}
	if g.calls[key] == c {
		delete(g.calls, key)
	}
	c.cancel()
}

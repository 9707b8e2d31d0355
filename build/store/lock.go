package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LockShared takes the store lock <root>/gc.lock shared, as a build does:
// any number of builds and checks hold it at once, and garbage collection,
// which takes it exclusively, never deletes what a running build (in any
// process) is about to reference. It waits while GC runs, until ctx is
// done. The returned function releases the lock and is safe to call more
// than once. The lock dies with the process, so a killed build never
// blocks GC.
func (s *Store) LockShared(ctx context.Context) (release func(), err error) {
	return s.lock(ctx, false)
}

// lock takes the store lock, shared or exclusive, waiting until it is free
// or ctx is done.
func (s *Store) lock(ctx context.Context, exclusive bool) (func(), error) {
	unlock, _, err := s.takeLock(ctx, exclusive, true)
	return unlock, err
}

// tryLock takes the store lock exclusively if nobody holds it, and returns
// ok=false (and a nil function) at once otherwise.
func (s *Store) tryLock() (unlock func(), ok bool, err error) {
	return s.takeLock(context.Background(), true, false)
}

// takeLock flocks the lock file, polling so that ctx can end the wait.
func (s *Store) takeLock(ctx context.Context, exclusive, wait bool) (func(), bool, error) {
	f, err := os.OpenFile(filepath.Join(s.root, LockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("lock store: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, false, fmt.Errorf("lock store: %w", err)
		}
		if !wait && errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, false, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, false, fmt.Errorf("lock store: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	done := false
	return func() {
		if !done {
			done = true
			f.Close() // closing the only descriptor releases the flock
		}
	}, true, nil
}

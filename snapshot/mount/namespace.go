package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// panicError carries a panic from the namespace thread to the caller.
type panicError struct{ v any }

// InNamespace runs fn on a new goroutine locked to an OS thread that has
// unshared its mount namespace and filesystem attributes (CLONE_NEWNS |
// CLONE_FS) and made every mount in it a slave of the host's, so mounts made
// by fn stay invisible to the rest of the process and the host, while mounts
// the host makes later still propagate in. It waits for fn and returns its
// error; a panic in fn is re-raised on the caller's goroutine.
//
// The thread is never unlocked, so it exits with the goroutine and takes
// the namespace, and all mounts still in it, with it.
//
// fn must do all work that needs those mounts on its own goroutine: other
// goroutines run on other threads, which live in the host namespace. A child
// process started by fn (os/exec) inherits the namespace, because the Go
// runtime forks from the calling thread.
func InNamespace(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan any, 1)
	onPrivateThread(func() {
		var res any
		defer func() { done <- res }()
		defer func() {
			if v := recover(); v != nil {
				res = panicError{v}
			}
		}()
		if err := enterPrivate(); err != nil {
			res = err
			return
		}
		if err := fn(); err != nil {
			res = err
		}
	})
	res := <-done
	switch v := res.(type) {
	case nil:
		return nil
	case panicError:
		panic(v.v)
	default:
		return v.(error)
	}
}

// onPrivateThread starts run on a new goroutine locked to a thread other
// than the main thread, and never unlocks it, so the runtime ends the thread
// when run returns. The main thread must be avoided: the runtime cannot end
// it, and parks it instead, namespace and mounts included, for the life of
// the process. A goroutine that finds itself on the main thread keeps it
// locked (so no other goroutine can be scheduled there) while a second
// goroutine, necessarily on another thread, does the work.
func onPrivateThread(run func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			run() // Deliberately no UnlockOSThread.
			return
		}
		hopped := make(chan struct{})
		go func() {
			defer close(hopped)
			runtime.LockOSThread()
			run() // Deliberately no UnlockOSThread.
		}()
		<-hopped
		runtime.UnlockOSThread()
	}()
}

// enterPrivate gives the calling (locked) thread its own mount namespace.
func enterPrivate() error {
	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / rslave: %w", err)
	}
	return nil
}

// WithMounts mounts each set of mounts on its own new directory below dir
// (os.TempDir() when dir is "") inside a private mount namespace (see
// InNamespace), calls fn with the mounted roots in the order of sets, then
// unmounts them and removes the directories, also when fn fails or panics.
//
// The mounts are visible only to fn's goroutine and the processes it
// starts. If the process is killed, the kernel removes the mounts with the
// thread; only empty directories named builder-mnt-* may remain in dir.
func WithMounts(ctx context.Context, dir string, sets [][]Mount, fn func(roots []string) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	base, err := os.MkdirTemp(dir, "builder-mnt-")
	if err != nil {
		return fmt.Errorf("create mount dir: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(base); rerr != nil && err == nil {
			err = fmt.Errorf("remove mount dir: %w", rerr)
		}
	}()
	roots := make([]string, len(sets))
	for i := range sets {
		roots[i] = filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(roots[i], 0o755); err != nil {
			return fmt.Errorf("create mount dir: %w", err)
		}
	}
	return InNamespace(ctx, func() (err error) {
		used := 0
		defer func() {
			// Last set first, in case a caller nests one set's root in
			// another's.
			for i := used - 1; i >= 0; i-- {
				if uerr := unmountAll(roots[i]); uerr != nil {
					err = errors.Join(err, uerr)
				}
			}
		}()
		for i, set := range sets {
			if len(set) == 0 {
				return fmt.Errorf("mount set %d: no mounts", i)
			}
			used = i + 1
			// Later mounts of a set stack on the same root.
			for _, m := range set {
				if err := m.To(roots[i], true); err != nil {
					return err
				}
			}
		}
		return fn(roots)
	})
}

// unmountAll removes every mount stacked on target.
func unmountAll(target string) error {
	for range 64 {
		err := unix.Unmount(target, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %s: too many stacked mounts", target)
}

package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"builder/snapshot/archive"
	"builder/snapshot/internal/fsutil"
	"builder/snapshot/mount"
	"builder/snapshot/naive"
	"builder/snapshot/overlay"
)

// Names of the snapshotters Open knows.
const (
	Overlay = "overlay"
	Naive   = "naive"
)

// kindFile records which snapshotter owns a root: the two store committed
// trees differently, so a root never changes hands.
const kindFile = "kind"

// Open opens the snapshot root dir (the caller passes <store>/snapshots),
// creating it if needed, with the snapshotter name: "overlay", "naive", or ""
// for automatic choice. It returns the snapshotter and its name.
//
// A root remembers the snapshotter that first used it; "" picks that one,
// and naming the other one is an error. For a new root "" picks overlay if
// a real overlay mount on the root's file system works (probed in a private
// mount namespace), else naive.
//
// Opening removes what killed processes left behind (active snapshots whose
// owner is gone, half-deleted trees). Several processes may open one root
// at once. Open needs root privileges.
func Open(root, name string) (Snapshotter, string, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, "", fmt.Errorf("open snapshots: %w", err)
	}
	kp := filepath.Join(root, kindFile)
	b, err := os.ReadFile(kp)
	switch {
	case err == nil:
		kind := strings.TrimSpace(string(b))
		if name != "" && name != kind {
			return nil, "", fmt.Errorf("open snapshots: %s holds %s snapshots, not %s", root, kind, name)
		}
		name = kind
	case !errors.Is(err, os.ErrNotExist):
		return nil, "", fmt.Errorf("open snapshots: %w", err)
	}
	var sn Snapshotter
	switch name {
	case Overlay:
		sn, err = overlay.New(root)
	case Naive:
		sn, err = naive.New(root)
	case "":
		name = Overlay
		sn, err = overlay.New(root)
		if err != nil {
			name = Naive
			sn, err = naive.New(root)
		}
	default:
		return nil, "", fmt.Errorf("open snapshots: unknown snapshotter %q", name)
	}
	if err != nil {
		return nil, "", fmt.Errorf("open snapshots: %w", err)
	}
	if err := claim(kp, name); err != nil {
		return nil, "", err
	}
	return sn, name, nil
}

// Kind returns the snapshotter that owns the snapshot root dir, as Open
// recorded it, or "" when none has opened it yet (or it cannot be read).
func Kind(root string) string {
	b, err := os.ReadFile(filepath.Join(root, kindFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// claim writes the kind file unless it exists, then checks it names kind.
func claim(path, kind string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.WriteString(kind + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("open snapshots: record kind: %w", err)
		}
		return nil
	}
	if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("open snapshots: record kind: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("open snapshots: %w", err)
	}
	if got := strings.TrimSpace(string(b)); got != kind {
		return fmt.Errorf("open snapshots: root holds %s snapshots, not %s", got, kind)
	}
	return nil
}

// WithMounts mounts each set of mounts (from Prepare or View) on a new
// directory below os.TempDir(), inside a mount namespace private to one OS
// thread, calls fn with the mounted roots in the order of sets, and
// unmounts them, also on error or panic. See package mount for details.
//
// IMPORTANT: the mounts exist only on the thread that runs fn. fn must do
// its file-system work on its own goroutine, or in child processes it
// starts (they inherit the namespace); any other goroutine sees empty
// directories. In exchange, a killed builder leaks no mount: the kernel
// drops them with the thread, leaving at most empty builder-mnt-*
// directories in the temp dir.
//
// Where mounts are not permitted at all (an unprivileged container, where
// builder runs with chroot isolation on the naive snapshotter), sets that
// are plain directories (one bind mount each) and scratch tmpfs sets are
// used without mounting: fn gets the directories themselves, and a fresh
// temporary directory for each tmpfs. The kernel then does not enforce a
// view's read-only flag; builder's own code only reads views.
func WithMounts(ctx context.Context, sets [][]Mount, fn func(roots []string) error) error {
	if !mount.Permitted() {
		if roots, cleanup, ok := plainRoots(sets); ok {
			defer cleanup()
			return fn(roots)
		}
	}
	return mount.WithMounts(ctx, "", sets, fn)
}

// plainRoots returns the directories of sets that need no mounting: each
// set a single bind mount, or a single tmpfs (made a temporary directory).
func plainRoots(sets [][]Mount) ([]string, func(), bool) {
	var temps []string
	cleanup := func() {
		for _, d := range temps {
			os.RemoveAll(d)
		}
	}
	roots := make([]string, len(sets))
	for i, set := range sets {
		if len(set) != 1 {
			cleanup()
			return nil, nil, false
		}
		switch set[0].Type {
		case "bind":
			roots[i] = set[0].Source
		case "tmpfs":
			d, err := os.MkdirTemp("", "builder-scratch-")
			if err != nil {
				cleanup()
				return nil, nil, false
			}
			temps = append(temps, d)
			roots[i] = d
		default:
			cleanup()
			return nil, nil, false
		}
	}
	return roots, cleanup, true
}

// Unpack makes the committed snapshot name from the committed snapshot
// parent ("" for none) plus the uncompressed OCI layer tar layer: it
// prepares a temporary key on parent, applies the layer through the mount
// (archive.Apply, which reads layer to its end, so a hash of layer's bytes
// is its DiffID) and commits. If name exists already it returns nil
// without reading layer. On error nothing is left behind.
//
// In a user namespace (rootless builder), where mknod of devices is
// refused, device nodes of the layer are left out of the snapshot with a
// warning on standard error, as buildah and podman do: the layer itself,
// and so the image, keeps them; only later steps of the build do not see
// them.
func Unpack(ctx context.Context, sn Snapshotter, name, parent string, layer io.Reader) error {
	if sn.Exists(ctx, name) {
		return nil
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("unpack %s: %w", name, err)
	}
	key := "unpack-" + hex.EncodeToString(rnd[:])
	mounts, err := sn.Prepare(ctx, key, parent)
	if err != nil {
		return fmt.Errorf("unpack %s: %w", name, err)
	}
	var opts archive.Options
	var skipped []string
	if fsutil.InUserNamespace() {
		opts.OnDeviceDenied = func(n string) { skipped = append(skipped, n) }
	}
	err = WithMounts(ctx, [][]Mount{mounts}, func(roots []string) error {
		_, err := archive.ApplyWith(roots[0], layer, opts)
		return err
	})
	if len(skipped) > 0 {
		fmt.Fprintf(os.Stderr, "WARNING: rootless: left %d device node(s) out of snapshot %s (first /%s): "+
			"a user namespace cannot create devices; the image layer keeps them\n", len(skipped), name, skipped[0])
	}
	if err == nil {
		err = sn.Commit(ctx, name, key)
	}
	if err != nil {
		rerr := sn.Remove(context.WithoutCancel(ctx), key)
		return errors.Join(fmt.Errorf("unpack %s: %w", name, err), rerr)
	}
	return nil
}

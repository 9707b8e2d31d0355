// Package snapshot manages copy-on-write filesystem trees for build steps.
//
// A snapshot is either committed (read-only, named, usually by the OCI chain ID
// of the layers it holds) or active (writable, named by a caller-chosen key).
// Prepare makes an active snapshot on top of a committed parent; the caller
// mounts it (see WithMounts), changes files, streams the change with Diff and
// turns it into a committed snapshot with Commit, or throws it away with Remove.
//
// Two implementations pass one test suite: overlay (snapshot/overlay), which
// keeps each layer in its own directory and takes the diff straight from the
// overlay upper directory, and naive (snapshot/naive), which copies the parent
// and diffs by walking both trees, for machines without overlayfs.
package snapshot

import (
	"context"
	"io"

	"builder/snapshot/internal/store"
	"builder/snapshot/mount"
)

// Mount is one mount(2) call: a filesystem type, a source and options, the
// way containerd describes mounts. Options holds the comma-separated data
// string split into words; "ro" and "rbind"/"bind" are turned into flags.
// It is defined in package mount, which the implementations share.
type Mount = mount.Mount

// Snapshotter creates, diffs and commits snapshots. Implementations are safe
// for use by several goroutines and by several processes sharing one root.
type Snapshotter interface {
	// Prepare creates the active snapshot key on top of the committed
	// snapshot parent ("" for an empty tree) and returns the mounts that make
	// it visible. It mounts nothing.
	Prepare(ctx context.Context, key, parent string) ([]Mount, error)

	// View returns read-only mounts of the committed snapshot name. It creates
	// no state that needs removing.
	View(ctx context.Context, name string) ([]Mount, error)

	// Diff writes the change of the active snapshot key against its parent
	// as an uncompressed OCI layer tar (sorted, normalized headers, OCI
	// whiteouts). The snapshot must not be mounted for writing meanwhile.
	Diff(ctx context.Context, w io.Writer, key string, opts DiffOptions) error

	// Commit turns the active snapshot key into the committed snapshot name.
	// It is idempotent: if name already exists, key is removed and the nil
	// error means name is there, not that this call made it.
	Commit(ctx context.Context, name, key string) error

	// Remove deletes an active snapshot. Removing a key that does not exist is
	// not an error.
	Remove(ctx context.Context, key string) error

	// Exists reports whether the committed snapshot name is present.
	Exists(ctx context.Context, name string) bool

	// List returns every committed snapshot: its name, its parent and the
	// directory holding it (for measuring disk use), in no set order.
	List(ctx context.Context) ([]Info, error)

	// Delete removes the committed snapshot name. It fails with an error
	// wrapping ErrInUse while another snapshot is built on it (delete
	// children first); a missing name is not an error. Callers must keep
	// other users from preparing on name meanwhile.
	Delete(ctx context.Context, name string) error
}

// Info describes a committed snapshot: Name, Parent ("" for none) and Dir,
// the directory that holds it.
type Info = store.Listed

// ErrInUse is returned (wrapped) by Delete for a snapshot that is the
// parent of another.
var ErrInUse = store.ErrInUse

// DiffOptions tunes the tar stream that Diff writes. Its one field, Epoch,
// when non-nil, clamps every entry's mtime to at most *Epoch (Unix seconds),
// as SOURCE_DATE_EPOCH asks.
type DiffOptions = store.DiffOptions

// ErrNotFound is returned (wrapped) for a snapshot name or key that does not
// exist.
var ErrNotFound = store.ErrNotFound

// ErrExists is returned (wrapped) by Prepare for a key that is already
// active, in this process or another live one.
var ErrExists = store.ErrExists

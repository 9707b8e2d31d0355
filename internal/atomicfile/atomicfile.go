// Package atomicfile replaces small files atomically and durably: the new
// content goes to a temporary file in the destination's directory, which
// is synced, renamed over the destination, and the directory synced, so
// that after a crash the path holds either the old content or the new,
// never a torn or empty file.
//
// It is our own rather than github.com/google/renameio: renameio does not
// sync the directory after the rename, puts the temporary file in $TMPDIR
// unless told otherwise, and names it after the destination with no fixed
// prefix, while the store's sweeps of files a killed writer left behind
// (cache records, checksums, stat caches, the image index) find them by
// TempPrefix. Content-store blobs do not come here: they stream while
// being hashed (snapshot/content).
package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// TempPrefix begins the name of every temporary file; sweeps remove such
// files once no writer can be alive.
const TempPrefix = ".tmp-"

// TempPattern is the shell pattern (for filepath.Glob and filepath.Match)
// of the temporary files a write to path may leave behind if killed.
func TempPattern(path string) string {
	return filepath.Join(filepath.Dir(path), TempPrefix+filepath.Base(path)+"-*")
}

// WriteFile replaces path with data, with exactly the permission bits perm
// (the umask does not apply). Concurrent writers each write a temporary
// file of their own; the last rename wins.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write replaces path with what fn writes, as WriteFile does. When fn or
// any step fails, path is left as it was and the temporary file removed.
func Write(path string, perm fs.FileMode, fn func(io.Writer) error) error {
	return write(path, perm, syncAll, fn)
}

// WriteFileSyncData replaces path with data as WriteFile does and syncs the
// data before the rename, but not the directory after it: after a power
// loss or a kernel crash the path holds the old content or the new, never a
// torn or empty new file, but the new content may be lost. It is for files
// whose loss only costs work done again; it saves the directory's fsync.
func WriteFileSyncData(path string, data []byte, perm fs.FileMode) error {
	return write(path, perm, syncData, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileNoSync replaces path with data as WriteFile does, atomically for
// every reader while the machine runs, but syncs nothing: after a power
// loss or a kernel crash the path may hold the old content, the new, or
// (the data not yet written back) an empty or partial file. It is for
// files that something later syncs (a syncfs of the file system) or whose
// loss a reader tolerates; it saves an fsync of the file and one of the
// directory.
func WriteFileNoSync(path string, data []byte, perm fs.FileMode) error {
	return write(path, perm, syncNone, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// What write syncs.
type syncMode int

const (
	syncNone syncMode = iota // nothing
	syncData                 // the file before the rename
	syncAll                  // the file, then the directory after the rename
)

func write(path string, perm fs.FileMode, mode syncMode, fn func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	err = f.Chmod(perm)
	if err == nil {
		err = fn(f)
	}
	if err == nil && mode >= syncData {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if mode < syncAll {
		return nil
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, os.ErrInvalid) { // a directory that cannot be synced
		return nil
	}
	return err
}

package copier

import (
	"fmt"
	"path"
)

// MkdirAll creates the directory dir, a path in the container, in the tree
// at the host directory rootDir, as WORKDIR does. Symlinks on the way are
// followed as if rootDir were "/" (an image's /var/run -> /run link leads
// to rootDir/run), and the walk then goes through directory handles only:
// every existing component is opened relative to its parent with
// O_NOFOLLOW, and every missing one is made with mkdirat and opened the
// same way. A component that becomes a symlink after the path was resolved
// makes MkdirAll fail; it never creates anything outside rootDir.
//
// Directories MkdirAll creates get mode 0755 and belong to owner (root
// when owner is nil); existing ones are left alone. MkdirAll is
// idempotent.
func MkdirAll(rootDir, dir string, owner *Owner) error {
	r, err := openRoot(rootDir)
	if err != nil {
		return fmt.Errorf("open root: %w", err)
	}
	defer r.close()
	rel, err := r.resolve(path.Clean("/" + dir))
	if err != nil {
		return fmt.Errorf("resolve %s: %w", dir, err)
	}
	uid, gid := 0, 0
	if owner != nil {
		uid, gid = owner.UID, owner.GID
	}
	w := &writer{dst: r}
	d, err := w.mkdirAll(rel, 0o755, uid, gid)
	if err != nil {
		return err
	}
	return d.Close()
}

package copier

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"builder/build/internal/passwd"
)

// ResolveOwner turns a --chown value into numeric ids, looking names up in
// root's /etc/passwd and /etc/group (root is the destination tree, as in
// BuildKit). Accepted forms: "user", "user:group", "uid", "uid:gid",
// "user:gid", "uid:group", and "user:" like "user". A user alone gets the
// user's primary group when named, or the same number as its uid when
// numeric. "root" is 0 even without an /etc/passwd. An empty value gives
// nil (no chown).
//
// The files are opened inside root without following a symlink out of it,
// must be regular files and at most 4 MiB. ResolveOwner only reads.
func ResolveOwner(root, chown string) (*Owner, error) {
	if chown == "" {
		return nil, nil
	}
	userPart, groupPart, _ := strings.Cut(chown, ":")
	if userPart == "" {
		return nil, fmt.Errorf("invalid chown %q: empty user", chown)
	}
	var o Owner
	if id, ok := numericID(userPart); ok {
		o.UID, o.GID = id, id
	} else {
		users, err := readAccounts(root, "/etc/passwd", passwd.ReadUsers)
		if err != nil {
			return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: can't find uid for user %s: %w", userPart, err)
		}
		i := slices.IndexFunc(users, func(u passwd.User) bool { return u.Name == userPart })
		if i < 0 {
			return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: can't find uid for user %s: %w", userPart, &errNoEntry{"user", userPart})
		}
		o.UID, o.GID = int(users[i].UID), int(users[i].GID)
	}
	if groupPart == "" {
		return &o, nil
	}
	if id, ok := numericID(groupPart); ok {
		o.GID = id
		return &o, nil
	}
	groups, err := readAccounts(root, "/etc/group", passwd.ReadGroups)
	if err != nil {
		return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: can't find gid for group %s: %w", groupPart, err)
	}
	i := slices.IndexFunc(groups, func(g passwd.Group) bool { return g.Name == groupPart })
	if i < 0 {
		return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: can't find gid for group %s: %w", groupPart, &errNoEntry{"group", groupPart})
	}
	o.GID = int(groups[i].GID)
	return &o, nil
}

// numericID parses a uid or gid; "root" counts as 0 (BuildKit does so).
func numericID(s string) (int, bool) {
	if s == "root" {
		return 0, true
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return int(v), true
}

// errNoEntry is returned when no line of /etc/passwd or /etc/group has
// the name.
type errNoEntry struct{ kind, name string }

func (e *errNoEntry) Error() string { return fmt.Sprintf("no such %s: %s", e.kind, e.name) }

// readAccounts parses file (inside root) with read. The file is opened
// without following a symlink out of root, and without blocking on a
// FIFO; package passwd refuses anything but a regular file of bounded
// size. A missing file has no entries.
func readAccounts[E any](rootDir, file string, read func(*os.File) ([]E, error)) ([]E, error) {
	r, err := openRoot(rootDir)
	if err != nil {
		return nil, err
	}
	defer r.close()
	rel, err := r.resolve(file)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", file, err)
	}
	f, err := openBeneath(r.fd(), rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", file, err)
	}
	defer f.Close()
	return read(f)
}

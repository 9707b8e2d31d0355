package sandbox

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"builder/build/internal/passwd"
)

// execUser is the identity a command runs with.
type execUser struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
	Home     string
}

// resolveUser resolves a Dockerfile USER value ("", "name", "uid",
// "name:group", "uid:gid"...) against the passwd and group files, the way
// runc does: an empty user is root; a name must exist in passwd, a number
// need not; an explicit group replaces the supplementary groups, which
// otherwise are the groups that list the user's name. Missing files count as
// empty.
func resolveUser(spec, passwdPath, groupPath string) (execUser, error) {
	u, err := resolveIDs(spec, passwdPath, groupPath)
	// As BuildKit (containerd's ensureAdditionalGids), the primary group
	// is also the first supplementary group.
	if err == nil && !slices.Contains(u.Groups, u.GID) {
		u.Groups = append([]uint32{u.GID}, u.Groups...)
	}
	return u, err
}

// resolveIDs is resolveUser without the primary group among the
// supplementary ones.
func resolveIDs(spec, passwdPath, groupPath string) (execUser, error) {
	userArg, groupArg, _ := strings.Cut(spec, ":")
	u := execUser{Home: "/"}

	users, err := readPasswd(passwdPath)
	if err != nil {
		return u, err
	}
	var matched *passwd.User
	uidArg, uidErr := passwd.ParseID(userArg)
	for i := range users {
		e := &users[i]
		if (userArg == "" && e.UID == 0) || (userArg != "" && e.Name == userArg) ||
			(userArg != "" && uidErr == nil && e.UID == uidArg) {
			matched = e
			break
		}
	}
	switch {
	case matched != nil:
		u.UID, u.GID, u.Home = matched.UID, matched.GID, matched.Home
		if u.Home == "" {
			u.Home = "/"
		}
	case userArg == "":
	case uidErr != nil:
		if errors.Is(uidErr, passwd.ErrIDRange) {
			return u, fmt.Errorf("user %s: %w", userArg, uidErr)
		}
		return u, fmt.Errorf("unable to find user %s: no matching entries in passwd file", userArg)
	default:
		u.UID = uidArg
	}

	if groupArg == "" && matched == nil {
		return u, nil
	}
	groups, err := readGroup(groupPath)
	if err != nil {
		return u, err
	}
	if groupArg == "" {
		for _, g := range groups {
			for _, m := range g.Members {
				if m == matched.Name {
					u.Groups = append(u.Groups, g.GID)
					break
				}
			}
		}
		return u, nil
	}
	gidArg, gidErr := passwd.ParseID(groupArg)
	for _, g := range groups {
		if g.Name == groupArg || (gidErr == nil && g.GID == gidArg) {
			u.GID = g.GID
			return u, nil
		}
	}
	if gidErr != nil {
		if errors.Is(gidErr, passwd.ErrIDRange) {
			return u, fmt.Errorf("group %s: %w", groupArg, gidErr)
		}
		return u, fmt.Errorf("unable to find group %s: no matching entries in group file", groupArg)
	}
	u.GID = gidArg
	return u, nil
}

func readPasswd(p string) ([]passwd.User, error) {
	f, err := openUserFile(p)
	if f == nil {
		return nil, err
	}
	defer f.Close()
	return passwd.ReadUsers(f)
}

func readGroup(p string) ([]passwd.Group, error) {
	f, err := openUserFile(p)
	if f == nil {
		return nil, err
	}
	defer f.Close()
	return passwd.ReadGroups(f)
}

// openUserFile opens /etc/passwd or /etc/group for package passwd, which
// refuses anything but a regular file of a bounded size. It runs in the
// sandbox, after pivot_root, so p cannot lead out of the image; but the
// image is untrusted, so the open does not block on a FIFO. A missing file
// gives nil and no error: it has no lines.
func openUserFile(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return f, nil
}

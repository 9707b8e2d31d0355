package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// execUser is the identity a command runs with.
type execUser struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
	Home     string
}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// resolveUser resolves a Dockerfile USER value ("", "name", "uid",
// "name:group", "uid:gid"...) against the passwd and group files, the way
// runc does: an empty user is root; a name must exist in passwd, a number
// need not; an explicit group replaces the supplementary groups, which
// otherwise are the groups that list the user's name. Missing files count as
// empty.
func resolveUser(spec, passwdPath, groupPath string) (execUser, error) {
	userArg, groupArg, _ := strings.Cut(spec, ":")
	u := execUser{Home: "/"}

	users, err := readPasswd(passwdPath)
	if err != nil {
		return u, err
	}
	var matched *passwdEntry
	uidArg, uidErr := parseID(userArg)
	for i := range users {
		e := &users[i]
		if (userArg == "" && e.uid == 0) || (userArg != "" && e.name == userArg) ||
			(userArg != "" && uidErr == nil && e.uid == uidArg) {
			matched = e
			break
		}
	}
	switch {
	case matched != nil:
		u.UID, u.GID, u.Home = matched.uid, matched.gid, matched.home
		if u.Home == "" {
			u.Home = "/"
		}
	case userArg == "":
	case uidErr != nil:
		if errors.Is(uidErr, errIDRange) {
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
			for _, m := range g.members {
				if m == matched.name {
					u.Groups = append(u.Groups, g.gid)
					break
				}
			}
		}
		return u, nil
	}
	gidArg, gidErr := parseID(groupArg)
	for _, g := range groups {
		if g.name == groupArg || (gidErr == nil && g.gid == gidArg) {
			u.GID = g.gid
			return u, nil
		}
	}
	if gidErr != nil {
		if errors.Is(gidErr, errIDRange) {
			return u, fmt.Errorf("group %s: %w", groupArg, gidErr)
		}
		return u, fmt.Errorf("unable to find group %s: no matching entries in group file", groupArg)
	}
	u.GID = gidArg
	return u, nil
}

var errIDRange = errors.New("uids and gids must be in range 0-2147483647")

// parseID parses a numeric uid or gid; a non-number gives a plain error, a
// number out of range errIDRange.
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, errIDRange
		}
		return 0, err
	}
	if n > math.MaxInt32 {
		return 0, errIDRange
	}
	return uint32(n), nil
}

func readPasswd(p string) ([]passwdEntry, error) {
	var out []passwdEntry
	err := readColonFile(p, func(f []string) {
		if len(f) < 4 {
			return
		}
		uid, err1 := parseID(f[2])
		gid, err2 := parseID(f[3])
		if err1 != nil || err2 != nil {
			return
		}
		e := passwdEntry{name: f[0], uid: uid, gid: gid}
		if len(f) > 5 {
			e.home = f[5]
		}
		out = append(out, e)
	})
	return out, err
}

func readGroup(p string) ([]groupEntry, error) {
	var out []groupEntry
	err := readColonFile(p, func(f []string) {
		if len(f) < 3 {
			return
		}
		gid, err := parseID(f[2])
		if err != nil {
			return
		}
		e := groupEntry{name: f[0], gid: gid}
		if len(f) > 3 && f[3] != "" {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					e.members = append(e.members, m)
				}
			}
		}
		out = append(out, e)
	})
	return out, err
}

// readColonFile calls fn with the colon-separated fields of each line of the
// file p that is neither blank nor a comment. A missing file has no lines.
// maxUserFile caps how much of /etc/passwd or /etc/group is read.
const maxUserFile = 4 << 20

// readColonFile calls fn with the fields of each line of p. It runs in the
// sandbox, after pivot_root, so p cannot lead out of the image; but the
// image is untrusted: p must be a regular file (a FIFO would block, a link
// to /dev/zero would never end) of at most maxUserFile bytes.
func readColonFile(p string, fn func([]string)) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("read %s: not a regular file", p)
	}
	if st.Size > maxUserFile {
		return fmt.Errorf("read %s: larger than %d bytes", p, maxUserFile)
	}
	r := bufio.NewReader(io.LimitReader(f, maxUserFile))
	for {
		line, err := r.ReadString('\n')
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			fn(strings.Split(line, ":"))
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
	}
}

// Package passwd reads an image's /etc/passwd and /etc/group. The files
// come from an untrusted image, so they are read from an already opened
// descriptor (the callers resolve the path inside the image their own
// way) and only when it is a regular file of at most MaxSize bytes: a FIFO
// would block and a link to /dev/zero would never end.
//
// Lines are parsed as runc does: blank lines and comments are skipped, and
// so is a line whose name or numeric fields are missing or malformed.
package passwd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// MaxSize is the largest account file read, in bytes.
const MaxSize = 4 << 20

// ErrIDRange is returned for a uid or gid beyond what Linux accepts in a
// user namespace mapping (runc's limit).
var ErrIDRange = errors.New("uids and gids must be in range 0-2147483647")

// User is one line of a passwd file.
type User struct {
	Name     string
	UID, GID uint32
	Home     string // may be empty
}

// Group is one line of a group file.
type Group struct {
	Name    string
	GID     uint32
	Members []string // user names, as listed
}

// ParseID parses a numeric uid or gid; a non-number gives a
// *strconv.NumError, a number out of range ErrIDRange.
func ParseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, ErrIDRange
		}
		return 0, err
	}
	if n > math.MaxInt32 {
		return 0, ErrIDRange
	}
	return uint32(n), nil
}

// ReadUsers parses the passwd file f, which should have been opened with
// O_NONBLOCK so that opening a FIFO does not hang. Errors name f.
func ReadUsers(f *os.File) ([]User, error) {
	var out []User
	err := readLines(f, func(fs []string) {
		if len(fs) < 4 || fs[0] == "" {
			return
		}
		uid, err1 := ParseID(fs[2])
		gid, err2 := ParseID(fs[3])
		if err1 != nil || err2 != nil {
			return
		}
		u := User{Name: fs[0], UID: uid, GID: gid}
		if len(fs) > 5 {
			u.Home = fs[5]
		}
		out = append(out, u)
	})
	return out, err
}

// ReadGroups parses the group file f, as ReadUsers does a passwd file.
func ReadGroups(f *os.File) ([]Group, error) {
	var out []Group
	err := readLines(f, func(fs []string) {
		if len(fs) < 3 || fs[0] == "" {
			return
		}
		gid, err := ParseID(fs[2])
		if err != nil {
			return
		}
		g := Group{Name: fs[0], GID: gid}
		if len(fs) > 3 {
			for _, m := range strings.Split(fs[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					g.Members = append(g.Members, m)
				}
			}
		}
		out = append(out, g)
	})
	return out, err
}

// readLines checks that f is a regular file of at most MaxSize bytes and
// calls fn with the colon-separated fields of each line that is neither
// blank nor a comment.
func readLines(f *os.File, fn func([]string)) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("read %s: not a regular file", f.Name())
	}
	if fi.Size() > MaxSize {
		return fmt.Errorf("read %s: larger than %d bytes", f.Name(), MaxSize)
	}
	r := bufio.NewReader(io.LimitReader(f, MaxSize))
	for {
		line, err := r.ReadString('\n')
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			fn(strings.Split(line, ":"))
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", f.Name(), err)
		}
	}
}

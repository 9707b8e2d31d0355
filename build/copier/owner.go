package copier

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxUserFile caps how much of /etc/passwd or /etc/group ResolveOwner
// reads.
const maxUserFile = 4 << 20

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
		e, err := lookup(root, "/etc/passwd", userPart)
		if err != nil {
			return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: can't find uid for user %s: %w", userPart, err)
		}
		if len(e) < 4 {
			return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: malformed /etc/passwd entry for %s", userPart)
		}
		if o.UID, ok = numericID(e[2]); !ok {
			return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: bad uid %q for user %s", e[2], userPart)
		}
		if o.GID, ok = numericID(e[3]); !ok {
			return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: bad gid %q for user %s", e[3], userPart)
		}
	}
	if groupPart == "" {
		return &o, nil
	}
	if id, ok := numericID(groupPart); ok {
		o.GID = id
		return &o, nil
	}
	e, err := lookup(root, "/etc/group", groupPart)
	if err != nil {
		return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: can't find gid for group %s: %w", groupPart, err)
	}
	var ok bool
	if len(e) < 3 {
		return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: malformed /etc/group entry for %s", groupPart)
	}
	if o.GID, ok = numericID(e[2]); !ok {
		return nil, fmt.Errorf("unable to convert uid/gid chown string to host mapping: bad gid %q for group %s", e[2], groupPart)
	}
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

// errNoEntry is returned by lookup when no line has the name.
type errNoEntry struct{ kind, name string }

func (e *errNoEntry) Error() string { return fmt.Sprintf("no such %s: %s", e.kind, e.name) }

// lookup returns the colon-separated fields of the line of file (inside
// root) whose first field is name.
func lookup(rootDir, file, name string) ([]string, error) {
	kind := "user"
	if file == "/etc/group" {
		kind = "group"
	}
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
		return nil, &errNoEntry{kind, name}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", file, err)
	}
	defer f.Close()
	st, err := fstat(f)
	if err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("read %s: not a regular file", file)
	}
	if st.Size > maxUserFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", file, maxUserFile)
	}
	sc := bufio.NewScanner(io.LimitReader(f, maxUserFile))
	sc.Buffer(make([]byte, 64<<10), maxUserFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if fields[0] == name {
			return fields, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return nil, &errNoEntry{kind, name}
}

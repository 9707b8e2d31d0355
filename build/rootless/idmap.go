package rootless

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// IDRange maps Size ids starting at ContainerID inside the user namespace
// to the ids starting at HostID outside it, as one line of
// /proc/PID/uid_map does.
type IDRange struct {
	ContainerID, HostID, Size uint32
}

// Mapping is the uid and gid map of builder's user namespace.
type Mapping struct {
	UIDs, GIDs []IDRange
}

// ErrNoSubIDs is returned (wrapped) by LookupMapping when /etc/subuid or
// /etc/subgid has no range for the user.
var ErrNoSubIDs = errors.New("no subordinate id range")

// User names the unprivileged user whose ids the namespace maps.
type User struct {
	Name     string // login name; "" matches subordinate id lines by number only
	UID, GID uint32
}

// LookupMapping returns the mapping for u read from the subordinate id
// files subuid and subgid (usually /etc/subuid and /etc/subgid): the user
// (and the user's primary group) becomes id 0 of the namespace, and the
// user's subordinate ranges, in file order, become ids 1 to N. Lines match
// by login name or by number; malformed lines and comments are ignored, as
// newuidmap does. A file without a range for u is an error wrapping
// ErrNoSubIDs.
func LookupMapping(u User, subuid, subgid string) (Mapping, error) {
	uids, err := subIDs(subuid, u.Name, u.UID)
	if err != nil {
		return Mapping{}, err
	}
	gids, err := subIDs(subgid, u.Name, u.UID)
	if err != nil {
		return Mapping{}, err
	}
	return Mapping{UIDs: idMap(u.UID, uids), GIDs: idMap(u.GID, gids)}, nil
}

// idMap puts own at id 0 and the ranges after it, back to back.
func idMap(own uint32, ranges []IDRange) []IDRange {
	m := []IDRange{{ContainerID: 0, HostID: own, Size: 1}}
	next := uint32(1)
	for _, r := range ranges {
		r.ContainerID = next
		m = append(m, r)
		next += r.Size
	}
	return m
}

// subIDs reads the ranges for the user name (or number id) from the
// subordinate id file path.
func subIDs(path, name string, id uint32) ([]IDRange, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: %w", path, ErrNoSubIDs)
	}
	if err != nil {
		return nil, fmt.Errorf("read subordinate ids: %w", err)
	}
	defer f.Close()
	ranges, err := parseSubIDs(f, name, id)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(ranges) == 0 {
		who := strconv.FormatUint(uint64(id), 10)
		if name != "" {
			who = name
		}
		return nil, fmt.Errorf("%s has no range for %s: %w", path, who, ErrNoSubIDs)
	}
	return ranges, nil
}

// maxIDs is how many ids a map can hold: all but (uid_t)-1.
const maxIDs = 1<<32 - 1

// parseSubIDs returns the ranges of the lines "name:start:count" or
// "id:start:count" of r that name the user, leaving out ranges that would
// not fit in a 32-bit map after the ones before them.
func parseSubIDs(r io.Reader, name string, id uint32) ([]IDRange, error) {
	idStr := strconv.FormatUint(uint64(id), 10)
	var out []IDRange
	total := uint64(1) // id 0 is the user
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 || (f[0] != idStr && (name == "" || f[0] != name)) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		// Id 4294967295 is (uid_t)-1, which no map may hold.
		if err1 != nil || err2 != nil || count == 0 || start+count > maxIDs || total+count > maxIDs {
			continue
		}
		out = append(out, IDRange{HostID: uint32(start), Size: uint32(count)})
		total += count
	}
	return out, sc.Err()
}

// helperArgs returns the arguments of newuidmap or newgidmap for pid and
// the ranges: "PID ns host count ...".
func helperArgs(pid int, ranges []IDRange) []string {
	args := []string{strconv.Itoa(pid)}
	for _, r := range ranges {
		args = append(args,
			strconv.FormatUint(uint64(r.ContainerID), 10),
			strconv.FormatUint(uint64(r.HostID), 10),
			strconv.FormatUint(uint64(r.Size), 10))
	}
	return args
}

package overlay

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"builder/internal/atomicfile"
	"builder/snapshot/internal/store"
)

// ProbeFile, in a snapshot root, remembers a successful probe: the options
// and xattr prefix it found, and what they depend on (the boot, the file
// system of the root, the user namespace). Opening the root again with all
// three unchanged takes the remembered answer instead of mounting again,
// which was the largest fixed cost of a fully cached build. A failed probe
// is never remembered.
const ProbeFile = "probe.json"

// probeResult is ProbeFile's content.
type probeResult struct {
	BootID  string   `json:"boot_id"`
	Dev     uint64   `json:"dev"`
	UserNS  string   `json:"user_ns"`
	Options []string `json:"options"`
	Xattr   string   `json:"xattr"`
}

// probeKey returns what a probe's answer on root depends on, with ok false
// when part of it cannot be read (then the probe runs every time).
func probeKey(root string) (probeResult, bool) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return probeResult{}, false
	}
	ns, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		return probeResult{}, false
	}
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		return probeResult{}, false
	}
	return probeResult{BootID: strings.TrimSpace(string(boot)), Dev: st.Dev, UserNS: ns}, true
}

// cachedProbe is probe, answered from ProbeFile when it was written for the
// same boot, file system and user namespace.
func cachedProbe(root string, st *store.Store) ([]string, string, error) {
	key, ok := probeKey(root)
	if !ok {
		return probe(st)
	}
	path := filepath.Join(root, ProbeFile)
	if dt, err := os.ReadFile(path); err == nil {
		var r probeResult
		if json.Unmarshal(dt, &r) == nil && r.BootID == key.BootID && r.Dev == key.Dev && r.UserNS == key.UserNS &&
			(r.Xattr == "trusted.overlay." || r.Xattr == "user.overlay.") {
			return slices.Clone(r.Options), r.Xattr, nil
		}
	}
	extra, xattr, err := probe(st)
	if err != nil {
		return nil, "", err
	}
	key.Options, key.Xattr = extra, xattr
	if dt, err := json.Marshal(key); err == nil {
		_ = atomicfile.WriteFile(path, dt, 0o600) // best effort: the next open probes again
	}
	return extra, xattr, nil
}

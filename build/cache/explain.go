package cache

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"builder/internal/atomicfile"
)

// Limits that keep the explanation data small.
const (
	// MaxListedFiles is where a COPY source's file list stops.
	MaxListedFiles = 20000
	maxHashedFile  = 8 << 20 // bigger files are described by size and mtime
	maxNamedPaths  = 5       // paths an explanation names before "and N more"
)

// Step is what the cache keeps about the last build of one Dockerfile step
// (found by StepID): its key, preimage and source text.
type Step struct {
	Key      Key             `json:"key"`
	Text     string          `json:"text"`
	Preimage json.RawMessage `json:"preimage"`
}

// StepID names a Dockerfile step across builds: by the Dockerfile's
// absolute path, the stage's index, the step's position in the stage
// (its index, or "line<N>" where it has none) and its instruction kind.
func StepID(dockerfile string, stage int, pos, op string) string {
	sum := sha256.Sum256([]byte(dockerfile + "\x00" + strconv.Itoa(stage) + "\x00" + pos + "\x00" + op))
	return hex.EncodeToString(sum[:16])
}

// LastStep returns the last build of the step id, if one is recorded and
// readable.
func (c *Cache) LastStep(id string) (Step, bool) {
	var s Step
	dt, err := os.ReadFile(filepath.Join(c.dir, stepsDir, id+".json"))
	if err != nil || json.Unmarshal(dt, &s) != nil {
		return Step{}, false
	}
	return s, true
}

// SaveStep records s as the last build of the step id, atomically; best
// effort, as explanations never fail a build. It syncs nothing: a crash
// may lose it or leave it unreadable (LastStep then finds nothing), which
// only costs the next miss its explanation.
func (c *Cache) SaveStep(id string, s Step) {
	dt, err := json.Marshal(s)
	if err != nil {
		return
	}
	d := filepath.Join(c.dir, stepsDir)
	if os.MkdirAll(d, 0o700) == nil {
		_ = atomicfile.WriteFileNoSync(filepath.Join(d, id+".json"), dt, 0o600)
	}
}

func sumFile(sum string) string {
	return strings.TrimPrefix(sum, "sha256:") + ".json"
}

// files reads the COPY source file list kept for a checksum.
func (c *Cache) files(sum string) (map[string]string, bool) {
	var m map[string]string
	dt, err := os.ReadFile(filepath.Join(c.dir, filesDir, sumFile(sum)))
	if err != nil || json.Unmarshal(dt, &m) != nil {
		return nil, false
	}
	return m, true
}

// SaveFiles keeps the file list of a COPY source checksum (path → what
// DescribeFile says) unless it is there already (the same checksum means
// the same files); best effort.
func (c *Cache) SaveFiles(sum string, files map[string]string) {
	p := filepath.Join(c.dir, filesDir, sumFile(sum))
	if _, err := os.Stat(p); err == nil {
		return
	}
	dt, err := json.Marshal(files)
	if err == nil {
		_ = c.writeSmall(filesDir, sumFile(sum), dt)
	}
}

// DescribeFile is one line about the file at p for a file list: type and
// mode, size, and the sha256 of small regular files (size and mtime for big
// ones) or a symlink's target.
func DescribeFile(p string, d fs.DirEntry) string { return DescribeFileWith(p, d, nil) }

// DescribeFileWith is DescribeFile with a source of known content digests:
// known returns the SHA-256 of a regular file's content, given its
// FileInfo, when it has it, and the file is then not read. Nil knows none.
func DescribeFileWith(p string, d fs.DirEntry, known func(fi fs.FileInfo) ([]byte, bool)) string {
	fi, err := d.Info()
	if err != nil {
		return "?"
	}
	s := fmt.Sprintf("%s %d", fi.Mode(), fi.Size())
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, _ := os.Readlink(p)
		s += " -> " + t
	case fi.Mode().IsRegular() && fi.Size() <= maxHashedFile:
		if known != nil {
			if sum, ok := known(fi); ok {
				return s + " " + hex.EncodeToString(sum[:16])
			}
		}
		f, err := os.Open(p)
		if err != nil {
			return s
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err == nil {
			s += " " + hex.EncodeToString(h.Sum(nil)[:16])
		}
	case fi.Mode().IsRegular():
		s += " mtime " + strconv.FormatInt(fi.ModTime().UnixNano(), 10)
	}
	return s
}

// Miss is a step that missed the cache, as Explain compares it with the
// last build of the same step.
type Miss struct {
	Text     string            // the instruction as written
	Preimage Preimage          // its key's preimage in this build
	Files    map[string]string // a COPY's source files in this build, or nil (then the kept list is used)
	// IsArg reports whether a variable of the step's environment is a
	// build arg (rather than an ENV), for the wording.
	IsArg func(name string) bool
}

// Explain names the first input of m that differs from prev, the last
// build of the same Dockerfile step (nil when none is recorded). It never
// prints a value a variable can set: those are shown as Redact does.
func (c *Cache) Explain(prev *Step, m Miss) string {
	if prev == nil {
		return "no earlier build of this step is recorded"
	}
	var old Preimage
	if json.Unmarshal(prev.Preimage, &old) != nil {
		return "the earlier build's record is unreadable"
	}
	cur := m.Preimage
	if prev.Text != m.Text {
		return fmt.Sprintf("instruction changed: was %q", oneLine(prev.Text))
	}
	if !slices.Equal(old.Args, cur.Args) {
		return c.argsReason(old.Args, cur.Args)
	}
	for _, k := range unionKeys(old.State, cur.State) {
		ov, nv := old.State[k], cur.State[k]
		if ov == nv {
			continue
		}
		if k == "env" {
			if r := c.envReason(m.IsArg, ov, nv); r != "" {
				return r
			}
		}
		if plainState[k] {
			return fmt.Sprintf("%s changed: %q, was %q", k, nv, ov)
		}
		return fmt.Sprintf("%s changed: %s, was %s", k, c.Redact(nv), c.Redact(ov))
	}
	if old.Parent != cur.Parent {
		op, np := old.Parent, cur.Parent
		if strings.HasPrefix(op, "image:") && strings.HasPrefix(np, "image:") {
			return fmt.Sprintf("base image changed: config %s, was %s", strings.TrimPrefix(np, "image:"), strings.TrimPrefix(op, "image:"))
		}
		if strings.HasPrefix(op, "image:") || strings.HasPrefix(np, "image:") || op == "scratch" || np == "scratch" {
			return "base image changed"
		}
	}
	for _, k := range unionKeys(old.Inputs, cur.Inputs) {
		ov, nv := old.Inputs[k], cur.Inputs[k]
		if ov == nv {
			continue
		}
		switch k {
		case "sources":
			return c.filesReason(ov, nv, m.Files)
		case "inline", "script":
			return "heredoc content changed"
		}
		return fmt.Sprintf("input %s changed", k)
	}
	if old.Parent != cur.Parent {
		return "parent step changed (an earlier step was rebuilt)"
	}
	return "the step's record is gone from the cache (pruned, or its layer was removed)"
}

// plainState lists the step state whose values explanations print as they
// are: fixed words that no variable can set. All other values (user,
// workdir, mounts, chown, the environment...) may hold a build arg's value
// and are shown as Redact does.
var plainState = map[string]bool{"network": true, "security": true, "parents": true, "epoch": true}

// argsReason explains a change of a step's expanded arguments, which may
// hold variables' values: it names the first argument that differs and
// shows redacted values.
func (c *Cache) argsReason(old, cur []string) string {
	if len(old) != len(cur) {
		return fmt.Sprintf("instruction arguments changed (a variable's value): %d arguments, was %d", len(cur), len(old))
	}
	for i := range cur {
		if cur[i] != old[i] {
			return fmt.Sprintf("instruction arguments changed (a variable's value): argument %d is %s, was %s", i+1, c.Redact(cur[i]), c.Redact(old[i]))
		}
	}
	return "instruction arguments changed"
}

// envReason explains a change of a RUN's environment, naming the variable
// and whether it is a build arg; values are redacted.
func (c *Cache) envReason(isArg func(string) bool, oldJSON, newJSON string) string {
	var ov, nv []string
	if json.Unmarshal([]byte(oldJSON), &ov) != nil || json.Unmarshal([]byte(newJSON), &nv) != nil {
		return ""
	}
	om, nm := envMap(ov), envMap(nv)
	for _, k := range unionKeys(om, nm) {
		o, oin := om[k]
		n, nin := nm[k]
		if o == n && oin == nin {
			continue
		}
		kind := "environment variable"
		if isArg != nil && isArg(k) {
			kind = "build arg"
		}
		switch {
		case !oin:
			return fmt.Sprintf("%s %s added: %s", kind, k, c.Redact(n))
		case !nin:
			return fmt.Sprintf("%s %s removed (was %s)", kind, k, c.Redact(o))
		}
		return fmt.Sprintf("%s %s changed: %s, was %s", kind, k, c.Redact(n), c.Redact(o))
	}
	return ""
}

// filesReason compares the file lists kept for two COPY source checksums.
func (c *Cache) filesReason(oldSum, newSum string, curFiles map[string]string) string {
	of, ok := c.files(oldSum)
	if curFiles == nil {
		curFiles, _ = c.files(newSum)
	}
	if !ok || curFiles == nil {
		return "source files changed (no file list kept to say which)"
	}
	var changed, added, removed []string
	for _, p := range unionKeys(of, curFiles) {
		o, oin := of[p]
		n, nin := curFiles[p]
		switch {
		case !oin:
			added = append(added, p)
		case !nin:
			removed = append(removed, p)
		case o != n:
			changed = append(changed, p)
		}
	}
	var parts []string
	for _, g := range []struct {
		word  string
		paths []string
	}{{"changed", changed}, {"added", added}, {"removed", removed}} {
		if len(g.paths) == 0 {
			continue
		}
		s := g.word + " " + strings.Join(g.paths[:min(len(g.paths), maxNamedPaths)], ", ")
		if n := len(g.paths) - maxNamedPaths; n > 0 {
			s += fmt.Sprintf(" and %d more", n)
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "source files changed (metadata the file list does not show, e.g. ownership or xattrs)"
	}
	return "source files " + strings.Join(parts, "; ")
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func unionKeys[V any](a, b map[string]V) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// Redact shows a value that may be secret (a build arg's, or anything
// expanded from one) in a log: "" stays "", anything else becomes "value"
// and the first 12 hex digits of its HMAC-SHA256 under the store's redact
// key. Two different values are told apart (a collision takes about 2^24
// values), the same value looks the same in every build on one store, and
// the log alone does not let anyone test guesses: an unkeyed hash of a
// low-entropy password would be found by hashing a dictionary, while the
// key is readable only where the store's cache records, which hold the
// values anyway, are.
func (c *Cache) Redact(v string) string {
	if v == "" {
		return `""`
	}
	m := hmac.New(sha256.New, c.redactKey())
	m.Write([]byte(v))
	return "value " + hex.EncodeToString(m.Sum(nil)[:6])
}

// redactKeyFile holds the store's key for Redact, 32 random bytes, mode 0600.
const redactKeyFile = "redact.key"

// redactKey returns the store's key for redacting values in logs, making
// it on first use. Concurrent builders agree on one key: each writes a
// candidate to a temporary file and links it into place, and whoever
// loses reads the winner's. Where the store cannot be written, the key is
// this process's own.
func (c *Cache) redactKey() []byte {
	c.keyOnce.Do(func() {
		p := filepath.Join(c.dir, redactKeyFile)
		if k, err := os.ReadFile(p); err == nil && len(k) == 32 {
			c.key = k
			return
		}
		c.key = make([]byte, 32)
		rand.Read(c.key)
		if f, err := os.CreateTemp(c.dir, ".tmp-key-*"); err == nil {
			_, werr := f.Write(c.key)
			if cerr := f.Close(); werr == nil && cerr == nil {
				_ = os.Link(f.Name(), p)
			}
			os.Remove(f.Name())
		}
		if k, err := os.ReadFile(p); err == nil && len(k) == 32 {
			c.key = k
		}
	})
	return c.key
}

// oneLine shortens an instruction's text to one line of at most 120
// bytes, as build's progress and errors show it.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

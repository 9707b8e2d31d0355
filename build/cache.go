package build

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/internal/atomicfile"
)

// keyVersion names the format of cache key preimages. Change it whenever the
// meaning of a key changes, so old records can never be served by mistake.
const keyVersion = "builder.step.v1"

// keyPreimage is the structured input of a step's cache key. Keeping it
// structured (rather than joined strings) keeps distinct inputs distinct, and
// keeping it on disk lets a miss be explained later.
type keyPreimage struct {
	V      string            `json:"v"`
	Parent string            `json:"parent"`           // key of the filesystem state the step starts from
	Op     string            `json:"op"`               // instruction kind
	Args   []string          `json:"args,omitempty"`   // expanded instruction arguments
	State  map[string]string `json:"state,omitempty"`  // config state the step can see (env, user, workdir…)
	Inputs map[string]string `json:"inputs,omitempty"` // digests of files the step reads
}

// Key is the hex sha256 of a step's preimage.
type Key string

func (p keyPreimage) key() (Key, []byte) {
	p.V = keyVersion
	dt, err := json.Marshal(p)
	if err != nil {
		panic(err) // only strings and maps of strings: cannot fail
	}
	sum := sha256.Sum256(dt)
	return Key(hex.EncodeToString(sum[:])), dt
}

// Record is what the cache keeps for a step that produced a filesystem change.
type Record struct {
	Empty     bool            `json:"empty,omitempty"` // the step changed nothing: no layer
	DiffID    v1.Hash         `json:"diffID,omitzero"` // zero (and left out) for an empty record
	Digest    v1.Hash         `json:"digest,omitzero"`
	Size      int64           `json:"size"`
	MediaType string          `json:"mediaType"`
	Created   time.Time       `json:"created"`
	Preimage  json.RawMessage `json:"preimage,omitempty"`
}

// Cache maps step keys to records, one small JSON file per key under dir.
// Records are written atomically (temp file + rename) after the blobs and
// snapshots they name, so a record that exists always points at stored data.
type Cache struct {
	dir string

	keyOnce sync.Once
	key     []byte // see redactKey
}

// OpenCache opens (creating) the cache directory.
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	c := &Cache{dir: dir}
	c.cleanTemp(10 * time.Minute)
	return c, nil
}

func (c *Cache) path(k Key) string { return filepath.Join(c.dir, string(k)+".json") }

// Get returns the record for k, or ok=false on a miss.
func (c *Cache) Get(k Key) (Record, bool, error) {
	dt, err := os.ReadFile(c.path(k))
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("read cache record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(dt, &r); err != nil {
		// A damaged record is a miss, not a failure: it will be rewritten.
		return Record{}, false, nil
	}
	// The file's mtime is the record's last use, which prune's until
	// filter and keep-storage eviction go by. Best effort.
	now := time.Now()
	_ = os.Chtimes(c.path(k), now, now)
	return r, true, nil
}

// CacheEntry is one record as Walk finds it.
type CacheEntry struct {
	Key    Key
	Record Record
	Used   time.Time // last hit or write
	Err    error     // the record file does not parse; Record is zero
}

// Walk calls fn for every record file, in no set order. Records written or
// removed meanwhile may or may not be seen. An error from fn stops the walk.
func (c *Cache) Walk(fn func(e CacheEntry) error) error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("walk cache: %w", err)
	}
	for _, de := range ents {
		name := de.Name()
		if !de.Type().IsRegular() || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		e := CacheEntry{Key: Key(strings.TrimSuffix(name, ".json"))}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		e.Used = fi.ModTime()
		dt, err := os.ReadFile(filepath.Join(c.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = json.Unmarshal(dt, &e.Record)
		}
		if err != nil {
			e.Err = fmt.Errorf("read cache record %s: %w", e.Key, err)
			e.Record = Record{}
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the record for k; a missing record is not an error.
func (c *Cache) Delete(k Key) error {
	if err := os.Remove(c.path(k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete cache record: %w", err)
	}
	return nil
}

// cleanTemp removes temporary record files older than age, which only a
// killed writer leaves (a live Put renames its file within moments).
func (c *Cache) cleanTemp(age time.Duration) {
	for _, dir := range []string{c.dir, filepath.Join(c.dir, sumsDir)} {
		ents, _ := os.ReadDir(dir)
		for _, de := range ents {
			if !strings.HasPrefix(de.Name(), atomicfile.TempPrefix) {
				continue
			}
			if fi, err := de.Info(); err == nil && time.Since(fi.ModTime()) >= age {
				_ = os.Remove(filepath.Join(dir, de.Name()))
			}
		}
	}
}

// Put stores r under k. It is idempotent.
func (c *Cache) Put(k Key, r Record) error {
	dt, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(c.path(k), dt, 0o600); err != nil {
		return fmt.Errorf("write cache record: %w", err)
	}
	return nil
}

// sumsDir holds remembered COPY source checksums (see job.sourceSum), one
// small file per memo key.
const sumsDir = "sums"

// GetSum returns the checksum remembered under memo key k.
func (c *Cache) GetSum(k string) (string, bool) {
	if !validKey(k) {
		return "", false
	}
	dt, err := os.ReadFile(filepath.Join(c.dir, sumsDir, k))
	if err != nil {
		return "", false
	}
	sum := string(dt)
	if d, ok := strings.CutPrefix(sum, "sha256:"); !ok || !validKey(d) {
		return "", false // damaged: computed again
	}
	return sum, true
}

// PutSum remembers checksum sum under memo key k, atomically.
func (c *Cache) PutSum(k, sum string) error {
	if !validKey(k) {
		return fmt.Errorf("remember checksum: bad key %q", k)
	}
	dir := filepath.Join(c.dir, sumsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("remember checksum: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, k), []byte(sum), 0o600); err != nil {
		return fmt.Errorf("remember checksum: %w", err)
	}
	return nil
}

// validKey reports whether k is a hex sha256, as keys and memo keys are.
func validKey(k string) bool {
	if len(k) != 64 {
		return false
	}
	for _, c := range k {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

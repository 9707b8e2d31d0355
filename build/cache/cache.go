package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"builder/internal/atomicfile"
)

// Directories below the cache directory.
const (
	sumsDir  = "sums"  // remembered COPY source checksums, one file per memo key
	stepsDir = "steps" // the last build of every Dockerfile step (Step)
	filesDir = "files" // COPY source file lists by checksum
)

// Cache maps step keys to records, one small JSON file per key in one
// directory, and keeps what Explain needs beside them. It is safe for
// concurrent use, also by several processes sharing the directory.
type Cache struct {
	dir string

	keyOnce sync.Once
	key     []byte // see redactKey
}

// Open opens (creating) the cache directory dir. It removes temporary
// files a killed writer left more than 10 minutes ago.
func Open(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	c := &Cache{dir: dir}
	c.CleanTemp(10 * time.Minute)
	return c, nil
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

func (c *Cache) path(k Key) string { return filepath.Join(c.dir, string(k)+".json") }

// Get returns the record for k, or ok=false on a miss. A damaged record is
// a miss, not a failure: it will be rewritten. A hit sets the file's mtime,
// the record's last use, which GC goes by.
func (c *Cache) Get(k Key) (Record, bool, error) {
	if !k.Valid() {
		return Record{}, false, nil
	}
	dt, err := os.ReadFile(c.path(k))
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("read cache record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(dt, &r); err != nil {
		return Record{}, false, nil
	}
	r.Key = k
	now := time.Now()
	_ = os.Chtimes(c.path(k), now, now) // best effort
	return r, true, nil
}

// Put stores r under r.Key, atomically. It is idempotent. The record's
// bytes are synced before it gets its name, so that a crash never leaves a
// torn record, but the name is not: a crash may lose a record written just
// before, which only costs running its step again. The caller writes a
// record only once the blob and snapshot it names are durable.
func (c *Cache) Put(r Record) error {
	k := r.Key
	if !k.Valid() {
		return fmt.Errorf("write cache record: key %q is not a hex sha256", k)
	}
	r.Key = "" // the file name
	dt, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("write cache record: %w", err)
	}
	if err := atomicfile.WriteFileSyncData(c.path(k), dt, 0o600); err != nil {
		return fmt.Errorf("write cache record: %w", err)
	}
	return nil
}

// Entry is one record as Walk finds it.
type Entry struct {
	Record           // Key is always set, the rest is zero when Err is set
	Used   time.Time // last hit or write
	Err    error     // the record file does not parse
}

// Walk calls fn for every record file, in no set order. Records written or
// removed meanwhile may or may not be seen. An error from fn stops the walk.
func (c *Cache) Walk(fn func(e Entry) error) error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("walk cache: %w", err)
	}
	for _, de := range ents {
		name := de.Name()
		if !de.Type().IsRegular() || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		k := Key(strings.TrimSuffix(name, ".json"))
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		e := Entry{Used: fi.ModTime()}
		dt, err := os.ReadFile(filepath.Join(c.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = json.Unmarshal(dt, &e.Record)
		}
		if err != nil {
			e.Err = fmt.Errorf("read cache record %s: %w", k, err)
			e.Record = Record{}
		}
		e.Key = k
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

// DropMemos removes what the cache keeps besides its records: the step
// index and file lists of explanations, and the remembered checksums.
func (c *Cache) DropMemos() error {
	for _, d := range []string{stepsDir, filesDir, sumsDir} {
		if err := os.RemoveAll(filepath.Join(c.dir, d)); err != nil {
			return fmt.Errorf("remove cache explanations: %w", err)
		}
	}
	return nil
}

// CleanTemp removes temporary record and checksum files older than age,
// which only a killed writer leaves (a live Put renames its file within
// moments). With age 0 it removes them all; call it so only when no writer
// can run.
func (c *Cache) CleanTemp(age time.Duration) {
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

// GetSum returns the checksum remembered under memo key k (a hex sha256).
// A damaged one reads as missing, never as a wrong sum.
func (c *Cache) GetSum(k string) (string, bool) {
	if !validHex(k) {
		return "", false
	}
	dt, err := os.ReadFile(filepath.Join(c.dir, sumsDir, k))
	if err != nil {
		return "", false
	}
	sum := string(dt)
	if d, ok := strings.CutPrefix(sum, "sha256:"); !ok || !validHex(d) {
		return "", false // damaged: computed again
	}
	return sum, true
}

// PutSum remembers checksum sum under memo key k, atomically.
func (c *Cache) PutSum(k, sum string) error {
	if !validHex(k) {
		return fmt.Errorf("remember checksum: bad key %q", k)
	}
	if err := c.writeSmall(sumsDir, k, []byte(sum)); err != nil {
		return fmt.Errorf("remember checksum: %w", err)
	}
	return nil
}

// writeSmall writes dir/name below the cache directory atomically.
func (c *Cache) writeSmall(dir, name string, dt []byte) error {
	d := filepath.Join(c.dir, dir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(d, name), dt, 0o600)
}

// Package record keeps a record of every build in the store, as docker
// buildx history does: who ran it (the command line, with build-arg values
// redacted), what it built from (Dockerfile and context digests), each
// step with its state, duration, cache-miss reason and complete output,
// and how it ended (the image and outputs, or the error).
//
// A record is a directory builds/<ID>/ below the store root holding
// record.json (replaced atomically when the build starts and ends) and
// events.jsonl (the progress events, appended as they happen). The writer
// holds an exclusive flock on events.jsonl while the build runs, so a
// record whose file is not locked but which never ended belongs to a
// killed process and reads as unfinished. A new record is made in a
// temporary directory and renamed into place, so a reader never sees half
// of one. Records are bounded by count and bytes (Limits) and Collect
// removes the oldest beyond them.
package record

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"builder/build/progress"
	"builder/internal/atomicfile"
)

// Dir is the directory below the store root that holds the records.
const Dir = "builds"

// Files of a record's directory.
const (
	recordFile = "record.json"
	eventsFile = "events.jsonl"
	tmpPrefix  = ".tmp-"
)

// version is the format of record.json.
const version = 1

// The states of a build.
const (
	Running     = "running"     // the build is going on in a live process
	Completed   = "completed"   // it succeeded
	Failed      = "failed"      // it failed with an error
	Interrupted = "interrupted" // Ctrl-C or SIGTERM stopped it
	Unfinished  = "unfinished"  // its process died without ending it (SIGKILL, a crash)
)

// The states of a step.
const (
	StepRunning = "running"
	StepCached  = "cached"
	StepRan     = "ran"
	StepFailed  = "failed"
)

// Record is what the store keeps of one build.
type Record struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	// Command is the command line, build-arg values and credentials in
	// URLs redacted.
	Command []string `json:"command"`
	// Dockerfile is the digest of the Dockerfile; Context that of the
	// context's file listing (names, modes, sizes, modification times and
	// link targets) and ContextSource what the CONTEXT argument named.
	Dockerfile    string    `json:"dockerfile,omitempty"`
	Context       string    `json:"context,omitempty"`
	ContextSource string    `json:"contextSource,omitempty"`
	Start         time.Time `json:"start"`
	End           time.Time `json:"end,omitzero"`
	State         string    `json:"state"`
	Error         string    `json:"error,omitempty"`
	Image         string    `json:"image,omitempty"` // manifest digest of the result
	Tags          []string  `json:"tags,omitempty"`
	Outputs       []string  `json:"outputs,omitempty"`
	// LogTruncated says the output grew past the record's log limit and
	// later lines were left out.
	LogTruncated bool `json:"logTruncated,omitempty"`
	// Steps is derived from the events when the record is read.
	Steps []Step `json:"steps,omitempty"`
	// Size is the bytes the record takes in the store, set when read.
	Size int64 `json:"size,omitempty"`
}

// Duration is how long the build took, or has taken until now.
func (r *Record) Duration() time.Duration {
	if r.End.IsZero() {
		if r.State == Running {
			return time.Since(r.Start)
		}
		return 0
	}
	return r.End.Sub(r.Start)
}

// Cached counts the steps served from the cache.
func (r *Record) Cached() int {
	n := 0
	for _, s := range r.Steps {
		if s.State == StepCached {
			n++
		}
	}
	return n
}

// Step is one step of a build.
type Step struct {
	N         int       `json:"n"`
	Name      string    `json:"name"`
	Stage     string    `json:"stage,omitempty"`
	State     string    `json:"state"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end,omitzero"`
	Duration  float64   `json:"durationSeconds"`
	CacheMiss string    `json:"cacheMiss,omitempty"`
	Error     string    `json:"error,omitempty"`
	Lines     int       `json:"lines"`
}

// Limits bound the records a store keeps. Zero fields take the defaults.
type Limits struct {
	Count int   // records kept, newest first
	Bytes int64 // bytes all records take together
}

// Default limits.
const (
	DefaultCount = 50
	DefaultBytes = 64 << 20
)

// WithDefaults fills the zero fields of l.
func (l Limits) WithDefaults() Limits {
	if l.Count <= 0 {
		l.Count = DefaultCount
	}
	if l.Bytes <= 0 {
		l.Bytes = DefaultBytes
	}
	return l
}

// maxLog is the most output one record keeps: half the byte limit, so a
// new record never crowds out all others at once.
func (l Limits) maxLog() int64 { return l.WithDefaults().Bytes / 2 }

// NewID returns a new random build ID: 32 hex digits.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// Writer writes the record of a running build. It is a progress.Observer:
// hand it to Progress.AddObserver. Its methods are safe for concurrent use.
type Writer struct {
	mu        sync.Mutex
	dir       string
	f         *os.File
	bw        *bufio.Writer
	enc       *json.Encoder
	rec       Record
	logged    int64
	maxLog    int64
	err       error // the first write error; later events are dropped
	truncated map[int]bool
	finished  bool
}

// Start makes the record of a build that begins now, from rec (ID,
// Command, digests) in the store at root, and returns its writer. The
// record reads as running until Finish; if the process dies first, as
// unfinished. limits sets how much output it keeps.
func Start(root string, rec Record, limits Limits) (*Writer, error) {
	dir := filepath.Join(root, Dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("build record: %w", err)
	}
	if rec.ID == "" {
		rec.ID = NewID()
	}
	if !validID(rec.ID) {
		return nil, fmt.Errorf("build record: bad ID %q", rec.ID)
	}
	rec.Version, rec.State = version, Running
	if rec.Start.IsZero() {
		rec.Start = time.Now()
	}
	tmp := filepath.Join(dir, tmpPrefix+rec.ID)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("build record: %w", err)
	}
	w, err := start(tmp, filepath.Join(dir, rec.ID), rec, limits)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("build record: %w", err)
	}
	return w, nil
}

func start(tmp, final string, rec Record, limits Limits) (*Writer, error) {
	if err := writeRecord(tmp, rec, false); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(tmp, eventsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		f.Close()
		return nil, err
	}
	bw := bufio.NewWriter(f)
	return &Writer{dir: final, f: f, bw: bw, enc: json.NewEncoder(bw), rec: rec, maxLog: limits.maxLog(),
		truncated: map[int]bool{}}, nil
}

// ID returns the build's ID.
func (w *Writer) ID() string { return w.rec.ID }

// Observe appends a progress event to the record. Output beyond the log
// limit is dropped, with one line per step saying so.
func (w *Writer) Observe(e progress.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished || w.err != nil {
		return
	}
	if e.Kind == progress.KindLine || e.Kind == progress.KindMessage {
		if w.logged+int64(len(e.Text)) > w.maxLog {
			w.rec.LogTruncated = true
			if e.Kind == progress.KindLine && !w.truncated[e.Step] {
				w.truncated[e.Step] = true
				w.write(progress.Event{Kind: progress.KindLine, Time: e.Time, Step: e.Step,
					Text: fmt.Sprintf("[output truncated: the build record keeps %d bytes of output]", w.maxLog)})
			}
			return
		}
		w.logged += int64(len(e.Text))
	}
	w.write(e)
	if e.Kind != progress.KindLine {
		w.flush()
	}
}

func (w *Writer) write(e progress.Event) {
	if err := w.enc.Encode(e); err != nil && w.err == nil {
		w.err = err
	}
}

func (w *Writer) flush() {
	if err := w.bw.Flush(); err != nil && w.err == nil {
		w.err = err
	}
}

// SetInputs notes the digests of the Dockerfile and the context once they
// are known (a remote context is fetched first).
func (w *Writer) SetInputs(dockerfile, context string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished {
		return nil
	}
	w.rec.Dockerfile, w.rec.Context = dockerfile, context
	if err := writeRecord(w.dir, w.rec, false); err != nil {
		return fmt.Errorf("build record: %w", err)
	}
	return nil
}

// Result is how a build ended.
type Result struct {
	Err         error // nil for success
	Interrupted bool  // Err is the build being cancelled
	Image       string
	Tags        []string // the names given, if not those the build was started with
	Outputs     []string
}

// Finish ends the record with the build's result and releases it. Only
// the first call counts.
func (w *Writer) Finish(res Result) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished {
		return nil
	}
	w.finished = true
	defer w.f.Close() // drops the flock
	w.flush()
	if w.err == nil {
		w.err = w.f.Sync()
	}
	r := w.rec
	r.End = time.Now()
	switch {
	case res.Err == nil:
		r.State = Completed
	case res.Interrupted:
		r.State, r.Error = Interrupted, res.Err.Error()
	default:
		r.State, r.Error = Failed, res.Err.Error()
	}
	r.Image, r.Outputs = res.Image, res.Outputs
	if len(res.Tags) > 0 {
		r.Tags = res.Tags
	}
	if err := writeRecord(w.dir, r, true); err != nil {
		return fmt.Errorf("build record: %w", err)
	}
	if w.err != nil {
		return fmt.Errorf("build record: %w", w.err)
	}
	return nil
}

// writeRecord replaces record.json in dir atomically; durable also syncs
// it. Only the final record is synced: the running record that Start and
// SetInputs write reads, after a crash, as unfinished (or, lost to a power
// cut, as unreadable, which Collect removes), so their four fsyncs per
// build, fully cached or not, bought nothing (issue 19).
func writeRecord(dir string, r Record, durable bool) error {
	r.Steps, r.Size = nil, 0
	dt, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	write := atomicfile.WriteFileNoSync
	if durable {
		write = atomicfile.WriteFile
	}
	return write(filepath.Join(dir, recordFile), append(dt, '\n'), 0o600)
}

// validID reports whether id can name a record: lower-case hex only, so
// that no ID escapes the records directory.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ErrNotFound is returned for an ID or prefix that names no record.
var ErrNotFound = errors.New("no such build record")

// Resolve returns the ID of the one record whose ID starts with prefix in
// the store at root.
func Resolve(root, prefix string) (string, error) {
	if !validID(prefix) {
		return "", fmt.Errorf("%w: %q (IDs are hex digits)", ErrNotFound, prefix)
	}
	ids, err := listIDs(root)
	if err != nil {
		return "", err
	}
	var match []string
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			match = append(match, id)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("%w: %s", ErrNotFound, prefix)
	case 1:
		return match[0], nil
	}
	return "", fmt.Errorf("build ID prefix %s is ambiguous: %d records match", prefix, len(match))
}

func listIDs(root string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(root, Dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && validID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// Load reads the record id of the store at root with its steps.
func Load(root, id string) (*Record, error) {
	r, err := loadHead(root, id)
	if err != nil {
		return nil, err
	}
	events, err := Events(root, id)
	if err != nil {
		return nil, err
	}
	r.Steps = steps(events, r.State)
	return r, nil
}

// loadHead reads record.json of id and works out whether a running record
// is still being written.
func loadHead(root, id string) (*Record, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	dir := filepath.Join(root, Dir, id)
	dt, err := os.ReadFile(filepath.Join(dir, recordFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(dt, &r); err != nil {
		return nil, fmt.Errorf("build record %s: %w", id, err)
	}
	if r.Version != version {
		return nil, fmt.Errorf("build record %s: unknown version %d", id, r.Version)
	}
	if r.ID != id {
		return nil, fmt.Errorf("build record %s: holds the record of %q", id, r.ID)
	}
	if r.State == Running && !locked(filepath.Join(dir, eventsFile)) {
		r.State = Unfinished
	}
	r.Size = dirSize(dir)
	return &r, nil
}

// locked reports whether a live writer holds the flock on path.
func locked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	return errors.Is(err, unix.EWOULDBLOCK)
}

func dirSize(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// Events reads the progress events of record id. A last line cut short by
// a killed process is left out.
func Events(root, id string) ([]progress.Event, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	f, err := os.Open(filepath.Join(root, Dir, id, eventsFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var events []progress.Event
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var e progress.Event
		err := dec.Decode(&e)
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return events, nil
		}
		if err != nil {
			return events, fmt.Errorf("build record %s: events: %w", id, err)
		}
		events = append(events, e)
	}
}

// steps folds the events into steps; in a build that is not running any
// more, a step still running never ended.
func steps(events []progress.Event, state string) []Step {
	var out []Step
	at := map[int]int{}
	for _, e := range events {
		if e.Kind == progress.KindMessage {
			continue
		}
		i, ok := at[e.Step]
		if !ok {
			if e.Kind != progress.KindStart {
				continue
			}
			at[e.Step] = len(out)
			out = append(out, Step{N: e.Step, Name: e.Name, Stage: stageOf(e.Name), State: StepRunning, Start: e.Time})
			continue
		}
		s := &out[i]
		switch e.Kind {
		case progress.KindLine:
			s.Lines++
			if r, ok := strings.CutPrefix(e.Text, "cache miss: "); ok && s.CacheMiss == "" {
				s.CacheMiss = r
			}
		case progress.KindCached, progress.KindDone, progress.KindError:
			s.End = e.Time
			s.Duration = e.Time.Sub(s.Start).Seconds()
			s.State = map[progress.Kind]string{progress.KindCached: StepCached, progress.KindDone: StepRan, progress.KindError: StepFailed}[e.Kind]
			s.Error = e.Text
		}
	}
	if state != Running {
		for i := range out {
			if out[i].State == StepRunning {
				out[i].State = Unfinished
			}
		}
	}
	return out
}

// stageOf reads the stage name from a step header "[name n/total] text";
// headers of other shapes belong to no stage.
func stageOf(header string) string {
	rest, ok := strings.CutPrefix(header, "[")
	if !ok {
		return ""
	}
	head, _, ok := strings.Cut(rest, "]")
	if !ok {
		return ""
	}
	i := strings.LastIndexByte(head, ' ')
	if i <= 0 {
		return ""
	}
	return head[:i]
}

// List reads every record of the store at root, newest first, without
// their steps unless withSteps. Records that cannot be read are skipped.
func List(root string, withSteps bool) ([]*Record, error) {
	ids, err := listIDs(root)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, id := range ids {
		var r *Record
		if withSteps {
			r, err = Load(root, id)
		} else {
			r, err = loadHead(root, id)
		}
		if err != nil {
			continue
		}
		out = append(out, r)
	}
	sortNewestFirst(out)
	return out, nil
}

// sortNewestFirst orders records by start time, newest first, then by ID.
func sortNewestFirst(recs []*Record) {
	sort.SliceStable(recs, func(i, j int) bool {
		if !recs[i].Start.Equal(recs[j].Start) {
			return recs[i].Start.After(recs[j].Start)
		}
		return recs[i].ID < recs[j].ID
	})
}

// ErrRunning is returned when removing the record of a running build.
var ErrRunning = errors.New("the build is still running")

// Remove deletes the record id. The record of a running build stays.
func Remove(root, id string) error {
	r, err := loadHead(root, id)
	if err != nil {
		return err
	}
	if r.State == Running {
		return fmt.Errorf("remove build record %s: %w", id, ErrRunning)
	}
	return os.RemoveAll(filepath.Join(root, Dir, id))
}

// Collected says what Collect removed.
type Collected struct {
	Records int
	Bytes   int64
}

// Collect removes the records beyond l (the oldest first, so that the
// newest l.Count records taking at most l.Bytes stay), unreadable records
// and the temporary directories of killed writers. Records of running
// builds are never removed. With all set it removes every record that is
// not running. Running records count towards the limits. Collect is
// idempotent.
func Collect(root string, l Limits, all bool) (Collected, error) {
	l = l.WithDefaults()
	dir := filepath.Join(root, Dir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return Collected{}, nil
	}
	if err != nil {
		return Collected{}, err
	}
	var c Collected
	drop := func(name string) {
		p := filepath.Join(dir, name)
		n := dirSize(p)
		if os.RemoveAll(p) == nil {
			c.Records++
			c.Bytes += n
		}
	}
	// Each record is read once (a no-op build runs this too, over up to
	// Count records).
	var recs []*Record
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			if !locked(filepath.Join(dir, name, eventsFile)) {
				p := filepath.Join(dir, name)
				_ = os.RemoveAll(p)
			}
		case !validID(name):
		default:
			r, err := loadHead(root, name)
			switch {
			case err == nil:
				recs = append(recs, r)
			case !errors.Is(err, ErrNotFound):
				drop(name)
			}
		}
	}
	sortNewestFirst(recs)
	var kept int
	var bytes int64
	full := all // once a record does not fit, no older one is kept
	for _, r := range recs {
		if r.State == Running {
			kept++
			bytes += r.Size
			continue
		}
		if full = full || kept >= l.Count || bytes+r.Size > l.Bytes; full {
			drop(r.ID)
			continue
		}
		kept++
		bytes += r.Size
	}
	return c, nil
}

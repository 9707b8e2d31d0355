package copier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// checksumVersion changes whenever the checksum input changes, so that
// old cache records stop matching.
const checksumVersion = "builder-copier-checksum/2"

// requestHeader is what Checksum hashes first: the checksum format and
// the request as Copy interprets it (chmod normalised), and whether src is
// the build context.
func requestHeader(src Source, req Request, mode *chmod) ([]byte, error) {
	var header bytes.Buffer
	hdr := struct {
		Version   string
		Sources   []string
		Dest      string
		Chown     *Owner
		Chmod     string
		Excludes  []string
		Parents   bool
		Add       bool
		Epoch     *int64
		IsContext bool
	}{checksumVersion, req.Sources, req.Dest, req.Chown, mode.String(), req.Excludes, req.Parents, req.Add, req.Epoch, src.IsContext}
	if err := json.NewEncoder(&header).Encode(hdr); err != nil {
		return nil, fmt.Errorf("encode checksum header: %w", err)
	}
	return header.Bytes(), nil
}

// RequestKey returns the hex sha256 of all that Checksum hashes besides the
// files: its format and the request (see requestHeader). Callers that
// remember sums key them by this and the identity of the source tree: for
// the same tree and key, Checksum returns the same sum.
func RequestKey(src Source, req Request) (string, error) {
	mode, err := parseChmod(req.Chmod)
	if err != nil {
		return "", err
	}
	header, err := requestHeader(src, req, mode)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(header)
	return hex.EncodeToString(sum[:]), nil
}

// Checksum returns "sha256:<hex>" over exactly what Copy would read for
// req: the request itself (sources, destination, flags) and, for every
// selected entry in walk order, its path, type, permission bits, owner
// (only for stage sources without --chown: context files are written as
// 0:0), size, symlink target, device number, hard link peer, extended
// attributes and the SHA-256 of its content. Modification times are left
// out, so a fresh checkout of the same context gives the same checksum.
//
// With src.Hashes (a StatCache of src.Root), a regular file whose stat
// identity is unchanged since an earlier checksum is not read again; the
// others are read by up to GOMAXPROCS goroutines at once for the build
// context (stage and image sources, which live in the caller's mount
// namespace, are read on the calling goroutine). The cache learns the
// files read; saving it is the caller's business.
//
// It fails the same way Copy does for missing, ignored or escaping
// sources and for invalid patterns or chmod values. It streams file
// contents and holds none of them. It reads only; calling it again on an
// unchanged source returns the same value.
func Checksum(ctx context.Context, src Source, req Request) (string, error) {
	mode, err := parseChmod(req.Chmod)
	if err != nil {
		return "", err
	}
	sr, err := openRoot(src.Root)
	if err != nil {
		return "", fmt.Errorf("open source root: %w", err)
	}
	defer sr.close()
	sel, err := selectSources(ctx, sr, src, req)
	if err != nil {
		return "", err
	}
	header, err := requestHeader(src, req, mode)
	if err != nil {
		return "", err
	}
	cache := src.Hashes
	if cache != nil && cache.root != sr.dir {
		cache = nil // a cache of another tree
	}
	workers := 0
	if src.IsContext {
		workers = runtime.GOMAXPROCS(0)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := startPipeline(wctx, cancel, sr, cache, workers)
	p.text(string(header))
	v := &hasher{p: p, ownership: !src.IsContext && req.Chown == nil}
	wk := newWalker(wctx, src.Ignore, sel.exclude, v)
	wk.lazyFiles = true
	var walkErr error
	for _, it := range sel.items {
		if walkErr = wctx.Err(); walkErr != nil {
			break
		}
		p.text(fmt.Sprintf("item %d %q %s\n", it.index, it.base, fileType(it.st.Mode)))
		if walkErr = wk.walkItem(sr, it, it.base); walkErr != nil {
			break
		}
	}
	sum, err := p.finish()
	if err != nil {
		return "", err // a file's error comes first: it caused the cancel
	}
	if walkErr != nil {
		return "", walkErr
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(sum), nil
}

// String is the canonical text of the chmod value, "" for none.
func (c *chmod) String() string {
	if c == nil {
		return ""
	}
	if c.octal {
		return fmt.Sprintf("%04o", c.bits)
	}
	return c.text
}

// hasher is the visitor that Checksum walks the sources with. It hands
// every line, in walk order, to the pipeline.
type hasher struct {
	p         *pipeline
	ownership bool
}

// meta is the line start every entry shares: kind, path, permission bits,
// owner (for sources whose ownership is copied) and xattrs.
func (v *hasher) meta(kind, rel string, st *unix.Stat_t, xattrs []xattr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q %04o", kind, rel, st.Mode&0o7777)
	if v.ownership {
		fmt.Fprintf(&b, " %d:%d", st.Uid, st.Gid)
	}
	for _, x := range xattrs {
		fmt.Fprintf(&b, " xattr %q %x", x.name, x.value)
	}
	return b.String()
}

func (v *hasher) enterDir(n *node) error {
	if n.rel == "" {
		// Only the times of an item's directory reach the destination.
		v.p.text("root\n")
		return nil
	}
	v.p.text(v.meta("dir", n.rel, &n.st, n.xattrs) + "\n")
	return nil
}

func (v *hasher) leaveDir(*node) error {
	v.p.text("end\n")
	return nil
}

func (v *hasher) leaf(n *node) error {
	kind := fileType(n.st.Mode)
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if n.linkOf != "" {
			// The peer's line has the content and xattrs of the inode.
			v.p.text(v.meta(kind, n.rel, &n.st, nil) + fmt.Sprintf(" link %q\n", n.linkOf))
			return nil
		}
		v.p.file(&fileJob{v: v, rel: n.rel, rootRel: n.rootRel, st: n.st})
	case unix.S_IFLNK:
		v.p.text(v.meta(kind, n.rel, &n.st, n.xattrs) + fmt.Sprintf(" target %q\n", n.target))
	case unix.S_IFCHR, unix.S_IFBLK:
		v.p.text(v.meta(kind, n.rel, &n.st, n.xattrs) + fmt.Sprintf(" rdev %d:%d\n", unix.Major(n.st.Rdev), unix.Minor(n.st.Rdev)))
	default:
		v.p.text(v.meta(kind, n.rel, &n.st, n.xattrs) + "\n")
	}
	return nil
}

// fileJob is one regular file whose line needs its content digest.
type fileJob struct {
	v       *hasher
	rel     string      // as the checksum names it
	rootRel string      // below the source root, to open it
	st      unix.Stat_t // lstat from the walk
	line    string
	err     error
	done    chan struct{}
}

// run fills in j.line: from the stat cache when the file is unchanged,
// else by opening the file beneath the root and reading it.
func (j *fileJob) run(sr *root, cache *StatCache, buf []byte) {
	kind := fileType(j.st.Mode)
	if cache != nil {
		if e, ok := cache.lookup(j.rootRel, &j.st); ok {
			j.line = j.v.meta(kind, j.rel, &j.st, e.xattrs) + fmt.Sprintf(" size %d sha256 %x\n", e.size, e.sum)
			return
		}
	}
	readAt := time.Now()
	if cache != nil {
		readAt = cache.now()
	}
	f, err := openBeneath(sr.fd(), j.rootRel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		j.err = fmt.Errorf("open %s: %w", j.rootRel, err)
		return
	}
	defer f.Close()
	st, err := fstat(f)
	if err != nil {
		j.err = err
		return
	}
	if st.Dev != j.st.Dev || st.Ino != j.st.Ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		j.err = fmt.Errorf("read %s: %w", j.rootRel, errChanged)
		return
	}
	xattrs, err := listXattrs(f)
	if err != nil {
		j.err = err
		return
	}
	c := sha256.New()
	size, err := io.CopyBuffer(c, f, buf)
	if err != nil {
		j.err = fmt.Errorf("read %s: %w", j.rootRel, err)
		return
	}
	var sum [sha256.Size]byte
	c.Sum(sum[:0])
	if cache != nil && size == st.Size {
		cache.store(j.rootRel, &st, readAt, sum, xattrs)
	}
	j.line = j.v.meta(kind, j.rel, &st, xattrs) + fmt.Sprintf(" size %d sha256 %x\n", size, sum)
}

// pipeline feeds the checksum in walk order while files are read in
// parallel: the walk queues lines and file jobs in order, workers run the
// jobs, and one writer hashes each line once its job is done. At most
// pipelineWindow entries are in flight, so memory stays bounded however
// large the tree.
type pipeline struct {
	ctx     context.Context
	cancel  context.CancelFunc
	sr      *root
	cache   *StatCache
	order   chan *fileJob // lines (done already closed) and jobs, in walk order
	jobs    chan *fileJob
	buf     []byte // for inline jobs, when there are no workers
	workers sync.WaitGroup
	writer  chan struct{} // closed when the writer is done
	h       hash.Hash
	err     error // the first job error, set by the writer
}

const pipelineWindow = 4096

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// startPipeline starts the writer and n workers; with n = 0, file jobs run
// on the caller's goroutine.
func startPipeline(ctx context.Context, cancel context.CancelFunc, sr *root, cache *StatCache, n int) *pipeline {
	p := &pipeline{ctx: ctx, cancel: cancel, sr: sr, cache: cache, order: make(chan *fileJob, pipelineWindow),
		writer: make(chan struct{}), h: sha256.New()}
	if n == 0 {
		p.buf = make([]byte, 256<<10)
	} else {
		p.jobs = make(chan *fileJob, pipelineWindow)
		for range n {
			p.workers.Add(1)
			go func() {
				defer p.workers.Done()
				buf := make([]byte, 256<<10)
				for j := range p.jobs {
					if ctx.Err() != nil {
						j.err = ctx.Err()
					} else {
						j.run(sr, cache, buf)
					}
					close(j.done)
				}
			}()
		}
	}
	go func() {
		defer close(p.writer)
		for j := range p.order {
			<-j.done
			if p.err != nil {
				continue // drain
			}
			if j.err != nil {
				p.err = j.err
				cancel()
				continue
			}
			io.WriteString(p.h, j.line)
		}
	}()
	return p
}

// text queues a ready line.
func (p *pipeline) text(s string) {
	p.order <- &fileJob{line: s, done: closedChan}
}

// file queues a job for a regular file.
func (p *pipeline) file(j *fileJob) {
	if p.jobs == nil {
		j.run(p.sr, p.cache, p.buf)
		j.done = closedChan
		p.order <- j
		return
	}
	j.done = make(chan struct{})
	p.order <- j
	p.jobs <- j
}

// finish waits for every queued entry and returns the digest, or the
// first error a file job met. It must be called exactly once.
func (p *pipeline) finish() ([]byte, error) {
	close(p.order)
	if p.jobs != nil {
		close(p.jobs)
	}
	p.workers.Wait()
	<-p.writer
	if p.err != nil {
		return nil, p.err
	}
	return p.h.Sum(nil), nil
}

package content

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// memberWriter compresses a layer tar as a sequence of independent gzip
// members (RFC 1952 allows any number in one file; every gzip reader reads
// them as one stream), cut where cutter says. Members are compressed in
// parallel by workers goroutines and written to dst in order by one more
// goroutine, while another hashes the uncompressed stream (the DiffID). A
// member whose uncompressed bytes equal a member of the previous layer
// (prev) is copied from that layer's blob instead of being compressed,
// after checking it (see prevLayer.reuse); the output is the same bytes
// either way, since a member depends only on its own input and the
// compressor. Close must be called once, also after a failure.
type memberWriter struct {
	dst    io.Writer
	level  int
	prev   *prevLayer
	cut    *cutter
	cur    []byte
	sent   int // members flushed so far (the producer's count)
	jobs   chan *member
	order  chan *member
	wg     sync.WaitGroup
	out    chan struct{} // closed when the ordered writer is done
	hashq  chan *member  // members in order, for the DiffID's hasher
	hashed chan struct{} // closed when the hasher is done
	diffID hash.Hash

	// Set by the ordered writer; read after out is closed.
	err     error
	members []memberInfo
	off     int64
	stats   LayerStats

	mu     sync.Mutex
	failed error // the ordered writer's error, seen by Write
	free   chan []byte
}

// member is one member on its way through the pipeline.
type member struct {
	raw    []byte
	out    []byte
	crc    uint32 // CRC-32 of raw, as its gzip trailer holds it
	reused bool
	done   chan struct{} // closed when out is ready
	summed chan struct{} // closed when raw is in the DiffID
}

// LayerStats tells how a gzip layer was written.
type LayerStats struct {
	Members, Reused int   // gzip members written, and how many of them came from the previous blob
	ReusedBytes     int64 // uncompressed bytes of the reused members
}

func newMemberWriter(dst io.Writer, level, workers int, prev *prevLayer) *memberWriter {
	if workers < 1 {
		workers = 1
	}
	w := &memberWriter{
		dst: dst, level: level, prev: prev, cut: newCutter(),
		jobs:   make(chan *member, 2*workers),
		order:  make(chan *member, 2*workers+1),
		out:    make(chan struct{}),
		hashq:  make(chan *member, 2*workers+1),
		hashed: make(chan struct{}),
		diffID: sha256.New(),
	}
	// Every buffer in flight, raw and compressed, comes back here.
	w.free = make(chan []byte, 2*(cap(w.order)+workers+1))
	w.cur = w.getBuf()
	for range workers {
		w.wg.Add(1)
		go w.work()
	}
	go w.writeOut()
	go w.hash()
	return w
}

func (w *memberWriter) getBuf() []byte {
	select {
	case b := <-w.free:
		return b[:0]
	default:
		return make([]byte, 0, memberHardMax)
	}
}

func (w *memberWriter) putBuf(b []byte) {
	if cap(b) < memberHardMax || cap(b) > 2*memberHardMax {
		return
	}
	select {
	case w.free <- b:
	default:
	}
}

// Write cuts p into members.
func (w *memberWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if err := w.failure(); err != nil {
			return total - len(p), err
		}
		n, cut := w.cut.next(p, len(w.cur))
		w.cur = append(w.cur, p[:n]...)
		p = p[n:]
		if cut {
			w.flush()
		}
	}
	return total, nil
}

func (w *memberWriter) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

func (w *memberWriter) flush() {
	m := &member{raw: w.cur, done: make(chan struct{}), summed: make(chan struct{})}
	w.order <- m
	w.hashq <- m
	w.jobs <- m
	w.sent++
	w.cur = w.getBuf()
}

// Close compresses what is left (an empty input still gives one member,
// so the blob is valid gzip), waits for the pipeline and returns its first
// error. It does not close dst.
func (w *memberWriter) Close() error {
	if len(w.cur) > 0 || w.sent == 0 {
		w.flush()
	}
	close(w.jobs)
	close(w.order)
	close(w.hashq)
	<-w.out
	<-w.hashed
	w.wg.Wait()
	return w.err
}

// Sum returns the sha256 of everything written, once Close returned.
func (w *memberWriter) Sum() []byte { return w.diffID.Sum(nil) }

func (w *memberWriter) work() {
	defer w.wg.Done()
	zw, _ := gzip.NewWriterLevel(nil, w.level) // the level was checked before
	for m := range w.jobs {
		if w.prev != nil && w.failure() == nil {
			m.crc = crc32.ChecksumIEEE(m.raw)
			if out, ok := w.prev.reuse(m.crc, m.raw); ok {
				m.out, m.reused = out, true
				close(m.done)
				continue
			}
		}
		buf := bytes.NewBuffer(w.getBuf())
		zw.Reset(buf)
		_, err := zw.Write(m.raw)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		if err != nil { // bytes.Buffer does not fail; kept for the contract
			w.setFailed(err)
		}
		m.out = buf.Bytes()
		m.crc = binary.LittleEndian.Uint32(m.out[len(m.out)-8:]) // the trailer's
		close(m.done)
	}
}

func (w *memberWriter) setFailed(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed == nil {
		w.failed = err
	}
}

// hash computes the DiffID on a goroutine of its own, while the workers
// compress and writeOut hashes and writes the compressed stream: on a big
// layer of incompressible data the two sha256 passes are the largest
// costs, and one goroutine doing both would be the bottleneck.
func (w *memberWriter) hash() {
	defer close(w.hashed)
	for m := range w.hashq {
		w.diffID.Write(m.raw)
		close(m.summed)
	}
}

// writeOut writes the members in order and records them. After a failure
// it keeps draining, so that Write and the workers never block on it.
func (w *memberWriter) writeOut() {
	defer close(w.out)
	for m := range w.order {
		<-m.done
		if w.err == nil {
			if w.err = w.failure(); w.err == nil {
				if _, err := w.dst.Write(m.out); err != nil {
					w.err = err
					w.setFailed(err)
				}
			}
		}
		w.members = append(w.members, memberInfo{Off: w.off, CLen: int64(len(m.out)), ULen: int64(len(m.raw)), CRC: m.crc})
		w.off += int64(len(m.out))
		w.stats.Members++
		if m.reused {
			w.stats.Reused++
			w.stats.ReusedBytes += int64(len(m.raw))
		}
		<-m.summed
		w.putBuf(m.raw)
		if !m.reused {
			w.putBuf(m.out)
		}
	}
}

// prevLayer is the previous blob of the same step and its sidecar, whose
// members may be copied instead of compressed again.
type prevLayer struct {
	r     io.ReaderAt
	byKey map[memberKey][]memberInfo
	zr    sync.Pool // *gzip.Reader
}

// memberKey finds the candidates for reuse: members of the same length
// and CRC-32. Only a full comparison (reuse) decides.
type memberKey struct {
	crc  uint32
	ulen int64
}

// errNoReuse is returned inside reuse checks; it never leaves the package.
var errNoReuse = errors.New("member not reusable")

// reuse returns a member of the previous blob whose uncompressed bytes are
// raw (whose CRC-32 is crc). A candidate is decompressed and compared with
// raw byte for byte, and must be exactly one gzip member with nothing after
// it; so a reused member always holds the new bytes, whatever the previous
// blob or its sidecar hold. Anything else (a corrupt blob or sidecar, a
// read error) means the member is compressed afresh.
func (p *prevLayer) reuse(crc uint32, raw []byte) ([]byte, bool) {
	for _, e := range p.byKey[memberKey{crc, int64(len(raw))}] {
		out, err := p.read(e)
		if err != nil {
			continue
		}
		if p.same(out, raw) {
			return out, true
		}
	}
	return nil, false
}

func (p *prevLayer) read(e memberInfo) ([]byte, error) {
	if e.CLen < gzipMinMember || e.CLen > maxMemberCompressed {
		return nil, errNoReuse
	}
	out := make([]byte, e.CLen)
	if _, err := p.r.ReadAt(out, e.Off); err != nil {
		return nil, err
	}
	return out, nil
}

// same reports whether out is one gzip member that decompresses to raw.
func (p *prevLayer) same(out, raw []byte) bool {
	br := bytes.NewReader(out)
	zr, _ := p.zr.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(br)
	} else {
		err = zr.Reset(br)
	}
	if err != nil {
		return false
	}
	defer p.zr.Put(zr)
	zr.Multistream(false)
	var buf [32 << 10]byte
	rest := raw
	for {
		n, err := zr.Read(buf[:])
		if n > len(rest) || !bytes.Equal(buf[:n], rest[:n]) {
			return false
		}
		rest = rest[n:]
		if err == io.EOF { // the reader checked the trailer's CRC-32 and size
			return len(rest) == 0 && br.Len() == 0
		}
		if err != nil {
			return false
		}
	}
}

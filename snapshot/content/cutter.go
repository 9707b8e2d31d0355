package content

import (
	"bytes"
	"hash/fnv"
	"strconv"
)

// Member boundaries of a gzip layer. The input is cut into members at tar
// entry boundaries chosen by the entries' names, so that a change to one
// file (its size, mode or content) moves no boundary but the ones next to
// it, and regular files' data is cut at fixed offsets from the start of
// that data. Every cut is a function of the tar bytes alone: the same tar
// gives the same members whoever produced it and however many CPUs compress
// them. Input that is not a tar (or stops parsing as one) is cut every
// memberHardMax bytes from the last cut.
const (
	// memberMin is the least a member holds before a name may end it.
	memberMin = 512 << 10
	// memberNameMask selects the names that end a member: one in 8.
	memberNameMask = 7
	// memberAtEntryMax ends a member at the next entry boundary however
	// its name hashes.
	memberAtEntryMax = 2 << 20
	// memberFileChunk cuts the data of a regular file every this many
	// bytes from the start of its data.
	memberFileChunk = 1 << 20
	// memberHardMax bounds a member anywhere (long metadata, non-tar input).
	memberHardMax = 4 << 20
	// paxKeep bounds the extended header bytes the cutter keeps to read a
	// size record and hash a name.
	paxKeep = 64 << 10
)

type cutState int

const (
	stHeader cutState = iota // collecting a 512-byte header block
	stMeta                   // data of a PAX/GNU metadata entry (kept, bounded)
	stData                   // data and padding of a file entry
	stRaw                    // not a tar (any more): fixed cuts only
)

// cutter follows a tar stream and says where members end.
type cutter struct {
	state   cutState
	hdr     [512]byte
	hn      int    // bytes of hdr filled
	meta    []byte // metadata entries' data before the current header (bounded)
	pax     []byte // the last PAX extended header's data (bounded)
	flag    byte   // the metadata entry being read (stMeta)
	remain  int64  // bytes left of the current entry's data and padding (stMeta, stData)
	dataLen int64  // the entry's data length without padding (stData)
	dataOff int64  // bytes of the entry's data passed so far (stData)
	hit     bool   // the current entry's name ends a member if memberMin is reached
	nameH   uint64 // FNV-1a of the current entry's names
}

func newCutter() *cutter { return &cutter{} }

// next returns how many bytes of p, at most, belong to the member being
// written (whose length is memberLen) and whether the member ends after
// them. It is called again with the rest of p.
func (c *cutter) next(p []byte, memberLen int) (n int, cut bool) {
	for n < len(p) {
		room := memberHardMax - memberLen - n
		if room <= 0 {
			return n, true
		}
		switch c.state {
		case stRaw:
			k := min(len(p)-n, room)
			n += k
		case stHeader:
			k := min(len(p)-n, 512-c.hn, room)
			copy(c.hdr[c.hn:], p[n:n+k])
			c.hn += k
			n += k
			if c.hn == 512 {
				c.hn = 0
				if c.header() {
					// An entry without data ends here.
					if c.endOfEntry(memberLen + n) {
						return n, true
					}
				}
			}
		case stMeta:
			k := int(min(int64(len(p)-n), c.remain, int64(room)))
			if keep := paxKeep - len(c.meta); keep > 0 {
				c.meta = append(c.meta, p[n:n+min(k, keep)]...)
			}
			if keep := paxKeep - len(c.pax); c.flag == 'x' && keep > 0 {
				c.pax = append(c.pax, p[n:n+min(k, keep)]...)
			}
			n += k
			c.remain -= int64(k)
			if c.remain == 0 {
				c.state = stHeader
			}
		case stData:
			k := int64(min(len(p)-n, room))
			k = min(k, c.remain)
			// Stop at the next fixed cut inside the file's data.
			if c.dataOff < c.dataLen {
				next := (c.dataOff/memberFileChunk + 1) * memberFileChunk
				if next < c.dataLen {
					k = min(k, next-c.dataOff)
				}
			}
			n += int(k)
			c.dataOff += k
			c.remain -= k
			if c.remain == 0 {
				c.state = stHeader
				if c.endOfEntry(memberLen + n) {
					return n, true
				}
			} else if c.dataOff < c.dataLen && c.dataOff%memberFileChunk == 0 {
				return n, true
			}
		}
	}
	return n, false
}

// endOfEntry reports whether the member ends with the entry just finished.
func (c *cutter) endOfEntry(memberLen int) bool {
	return memberLen >= memberAtEntryMax || (memberLen >= memberMin && c.hit)
}

// header parses the header block in c.hdr and sets the next state. It
// reports whether the entry (not a metadata entry) has no data, so that it
// ends with its header.
func (c *cutter) header() (noData bool) {
	h := &c.hdr
	if allZero(h[:]) { // the end-of-archive blocks: the rest is one run
		c.state = stRaw
		return false
	}
	if !checksumOK(h) {
		c.state = stRaw
		return false
	}
	size, ok := parseNumeric(h[124:136])
	if !ok || size < 0 {
		c.state = stRaw
		return false
	}
	padded := func(n int64) int64 { return (n + 511) &^ 511 }
	switch flag := h[156]; flag {
	case 'x', 'g', 'L', 'K':
		c.meta = append(c.meta, flag)
		if flag == 'x' {
			c.pax = c.pax[:0]
		}
		c.state, c.remain, c.flag = stMeta, padded(size), flag
		if c.remain == 0 {
			c.state = stHeader
		}
		return false
	default:
		if s := paxSize(c.pax); s >= 0 {
			size = s
		}
		hf := fnv.New64a()
		hf.Write(cString(h[0:100]))
		hf.Write(cString(h[345:500])) // ustar prefix
		hf.Write(c.meta)
		c.nameH = hf.Sum64()
		c.hit = c.nameH&memberNameMask == 0
		c.meta, c.pax = c.meta[:0], c.pax[:0]
		switch flag {
		case '1', '2', '3', '4', '5', '6': // header-only types, as archive/tar reads them
			size = 0
		}
		if size == 0 {
			c.state = stHeader
			return true
		}
		c.state, c.remain, c.dataLen, c.dataOff = stData, padded(size), size, 0
		return false
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// checksumOK checks the header checksum (unsigned sum, as POSIX says).
func checksumOK(h *[512]byte) bool {
	want, ok := parseNumeric(h[148:156])
	if !ok {
		return false
	}
	var sum int64
	for i, b := range h {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int64(b)
	}
	return sum == want
}

// parseNumeric reads a tar numeric field: octal text, or base-256 when the
// first byte's high bit is set.
func parseNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0]&0x40 != 0 { // negative
			return 0, false
		}
		var x int64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if x > (1<<55)-1 {
				return 0, false
			}
			x = x<<8 | int64(c)
		}
		return x, true
	}
	s := string(bytes.Trim(b, " \x00"))
	if s == "" {
		return 0, true
	}
	x, err := strconv.ParseInt(s, 8, 64)
	return x, err == nil
}

// paxSize returns the last "size" record of PAX extended header data, or
// -1. A malformed record ends the search.
func paxSize(pax []byte) int64 {
	size := int64(-1)
	for len(pax) > 0 {
		sp := bytes.IndexByte(pax, ' ')
		if sp <= 0 || sp > 20 {
			break
		}
		n, err := strconv.Atoi(string(pax[:sp]))
		if err != nil || n <= sp || n > len(pax) {
			break
		}
		if v, ok := bytes.CutPrefix(pax[sp+1:n], []byte("size=")); ok {
			if s, err := strconv.ParseInt(string(bytes.TrimSuffix(v, []byte("\n"))), 10, 64); err == nil && s >= 0 {
				size = s
			}
		}
		pax = pax[n:]
	}
	return size
}

func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// Package imagediff explains why two container images differ: manifest and
// config fields by JSON path, then layer by layer, file by file (type, mode,
// owner, size, mtime, content hash, link target, xattrs). It is what a user
// reaches for when a build stops being reproducible.
//
// Compare reads each differing layer once as a stream, hashing file
// contents as they pass; it keeps one small record per tar entry, never a
// whole layer. Layers with equal diff IDs are not read at all.
//
// imagediff.go holds the comparison itself (~530 lines): config, layers and
// entries are compared by one set of rules, read in order.
package imagediff

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/export"
)

// Change is one differing JSON field of the manifest or config. Old or New
// is "" when the field is absent on that side; present values are JSON.
type Change struct {
	Path     string // JSON path, e.g. "config.Env[1]" or "history[3].created"
	Old, New string
}

// FileChange is one differing attribute of a file in a layer. Field is one
// of: "added", "removed" (Old/New then describe the whole entry), "type",
// "mode", "owner", "owner names", "size", "mtime", "content", "link",
// "device", "xattrs", "atime", "ctime", "tar format", "duplicate".
type FileChange struct {
	Path     string // absolute path in the image, e.g. "/etc/passwd"
	Field    string
	Old, New string
}

// LayerDesc describes one side of a compared layer.
type LayerDesc struct {
	Digest    v1.Hash
	DiffID    v1.Hash
	Size      int64
	MediaType string
}

// LayerReport is the comparison of the layers at one index (counting from
// 1). A or B is nil when only one image has a layer there.
type LayerReport struct {
	Index int
	A, B  *LayerDesc
	Files []FileChange
	Notes []string // differences no single file explains
}

// Report is the full comparison of two images.
type Report struct {
	A, B     v1.Hash // manifest digests
	Manifest []Change
	Config   []Change
	Layers   []LayerReport // only the layers that differ
	// Attestations are the differences of the images' attestations,
	// when CompareAttestations compared them (AttestationsCompared).
	Attestations         []Change
	AttestationsCompared bool
}

// Identical reports whether the two images have the same manifest digest.
// tarTypeRegA is the type flag '\x00' of a regular file in pre-POSIX
// tars, which old tools still write.
const tarTypeRegA = '\x00'

func (r *Report) Identical() bool { return r.A == r.B && len(r.Attestations) == 0 }

// OnlyTimestamps reports whether the images differ, and differ only in
// times: config fields named "created" and file mtimes (layer digests then
// differ as a consequence).
func (r *Report) OnlyTimestamps() bool {
	if r.Identical() || len(r.Manifest) > 0 || len(r.Attestations) > 0 {
		return false
	}
	for _, c := range r.Config {
		if c.Path != "created" && !strings.HasSuffix(c.Path, ".created") {
			return false
		}
	}
	for _, l := range r.Layers {
		if l.A == nil || l.B == nil || len(l.Notes) > 0 {
			return false
		}
		for _, f := range l.Files {
			if f.Field != "mtime" {
				return false
			}
		}
	}
	return true
}

// Compare compares image a with image b. It reads the manifests and
// configs, and streams the layers whose diff IDs differ.
func Compare(ctx context.Context, a, b v1.Image) (*Report, error) {
	r := &Report{}
	var err error
	if r.A, err = a.Digest(); err != nil {
		return nil, fmt.Errorf("digest of A: %w", err)
	}
	if r.B, err = b.Digest(); err != nil {
		return nil, fmt.Errorf("digest of B: %w", err)
	}
	if r.Identical() {
		return r, nil
	}
	ma, err := rawJSON(a.RawManifest)
	if err != nil {
		return nil, fmt.Errorf("manifest of A: %w", err)
	}
	mb, err := rawJSON(b.RawManifest)
	if err != nil {
		return nil, fmt.Errorf("manifest of B: %w", err)
	}
	// Digests and sizes of the config and layers follow from their content,
	// which the config and layer sections explain.
	for _, m := range []any{ma, mb} {
		if mm, ok := m.(map[string]any); ok {
			stripDescriptor(mm["config"])
			if ls, ok := mm["layers"].([]any); ok {
				for _, l := range ls {
					stripDescriptor(l)
				}
			}
		}
	}
	diffJSON("", ma, mb, &r.Manifest)
	ca, err := rawJSON(a.RawConfigFile)
	if err != nil {
		return nil, fmt.Errorf("config of A: %w", err)
	}
	cb, err := rawJSON(b.RawConfigFile)
	if err != nil {
		return nil, fmt.Errorf("config of B: %w", err)
	}
	for _, c := range []any{ca, cb} {
		if cm, ok := c.(map[string]any); ok {
			if rf, ok := cm["rootfs"].(map[string]any); ok {
				delete(rf, "diff_ids") // the layer section shows them
			}
		}
	}
	diffJSON("", ca, cb, &r.Config)

	la, err := a.Layers()
	if err != nil {
		return nil, fmt.Errorf("layers of A: %w", err)
	}
	lb, err := b.Layers()
	if err != nil {
		return nil, fmt.Errorf("layers of B: %w", err)
	}
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y v1.Layer
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		lr, err := compareLayers(ctx, i+1, x, y)
		if err != nil {
			return nil, err
		}
		if lr != nil {
			r.Layers = append(r.Layers, *lr)
		}
	}
	if len(r.Manifest)+len(r.Config)+len(r.Layers) == 0 {
		r.Manifest = append(r.Manifest, Change{Path: "(encoding)", Old: r.A.String(), New: r.B.String()})
	}
	return r, nil
}

func stripDescriptor(v any) {
	if d, ok := v.(map[string]any); ok {
		delete(d, "digest")
		delete(d, "size")
	}
}

func rawJSON(get func() ([]byte, error)) (any, error) {
	raw, err := get()
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	return v, nil
}

// diffJSON appends the differences between a and b under path p, keys in
// sorted order, arrays element by element.
func diffJSON(p string, a, b any, out *[]Change) {
	ma, aObj := a.(map[string]any)
	mb, bObj := b.(map[string]any)
	if aObj && bObj {
		keys := map[string]bool{}
		for k := range ma {
			keys[k] = true
		}
		for k := range mb {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			diffJSON(joinKey(p, k), ma[k], mb[k], out)
		}
		return
	}
	sa, aArr := a.([]any)
	sb, bArr := b.([]any)
	if aArr && bArr {
		for i := 0; i < len(sa) || i < len(sb); i++ {
			var x, y any
			if i < len(sa) {
				x = sa[i]
			}
			if i < len(sb) {
				y = sb[i]
			}
			diffJSON(p+"["+strconv.Itoa(i)+"]", x, y, out)
		}
		return
	}
	ja, jb := encode(a), encode(b)
	if ja != jb {
		*out = append(*out, Change{Path: p, Old: ja, New: jb})
	}
}

func joinKey(p, k string) string {
	if p == "" {
		return k
	}
	return p + "." + k
}

// encode is v as compact JSON with sorted keys; "" for absent (nil).
func encode(v any) string {
	if v == nil {
		return ""
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return strings.TrimSuffix(buf.String(), "\n")
}

func describe(l v1.Layer) (*LayerDesc, error) {
	if l == nil {
		return nil, nil
	}
	d := &LayerDesc{}
	var err error
	if d.Digest, err = l.Digest(); err != nil {
		return nil, err
	}
	if d.DiffID, err = l.DiffID(); err != nil {
		return nil, err
	}
	if d.Size, err = l.Size(); err != nil {
		return nil, err
	}
	mt, err := l.MediaType()
	if err != nil {
		return nil, err
	}
	d.MediaType = string(mt)
	return d, nil
}

// compareLayers compares layer a with layer b (either may be nil); it
// returns nil if they are the same blob.
func compareLayers(ctx context.Context, idx int, a, b v1.Layer) (*LayerReport, error) {
	da, err := describe(a)
	if err != nil {
		return nil, fmt.Errorf("layer %d of A: %w", idx, err)
	}
	db, err := describe(b)
	if err != nil {
		return nil, fmt.Errorf("layer %d of B: %w", idx, err)
	}
	lr := &LayerReport{Index: idx, A: da, B: db}
	if da != nil && db != nil && da.DiffID == db.DiffID {
		if da.Digest == db.Digest && da.MediaType == db.MediaType {
			return nil, nil
		}
		if da.Digest != db.Digest {
			lr.Notes = append(lr.Notes, "same files, compressed differently")
		} else {
			lr.Notes = append(lr.Notes, "same blob, other media type")
		}
		return lr, nil
	}
	ea, err := readLayer(ctx, a)
	if err != nil {
		return nil, fmt.Errorf("read layer %d of A: %w", idx, err)
	}
	eb, err := readLayer(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("read layer %d of B: %w", idx, err)
	}
	lr.Files = compareEntries(ea, eb)
	if len(lr.Files) == 0 && da != nil && db != nil {
		if !equalOrder(ea.order, eb.order) {
			lr.Notes = append(lr.Notes, "same files, in a different order in the tar")
		} else {
			lr.Notes = append(lr.Notes, "same files, encoded differently in the tar (headers or padding)")
		}
	}
	return lr, nil
}

// entry is what a tar entry says about a file; content is its sha256.
type entry struct {
	typ            byte
	mode           int64
	uid, gid       int
	uname, gname   string
	size           int64
	mtime          time.Time
	atime, ctime   time.Time
	link           string
	content        string
	devmaj, devmin int64
	xattrs         string
	format         tar.Format
	count          int // times the path occurs in the layer
}

type layerEntries struct {
	files map[string]*entry
	order []string
}

// readLayer streams the layer's tar, keeping one entry per path.
func readLayer(ctx context.Context, l v1.Layer) (*layerEntries, error) {
	le := &layerEntries{files: map[string]*entry{}}
	if l == nil {
		return le, nil
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	r, err := export.Decompress(rc)
	if err != nil {
		rc.Close()
		return nil, err
	}
	defer r.Close()
	tr := tar.NewReader(r)
	buf := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return le, nil
		}
		if err != nil {
			return nil, err
		}
		p := cleanPath(h.Name)
		e := &entry{typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid, uname: h.Uname, gname: h.Gname,
			size: h.Size, mtime: h.ModTime, atime: h.AccessTime, ctime: h.ChangeTime, devmaj: h.Devmajor,
			devmin: h.Devminor, format: h.Format}
		if e.typ == tarTypeRegA {
			e.typ = tar.TypeReg
		}
		if h.Typeflag == tar.TypeLink {
			e.link = cleanPath(h.Linkname)
		} else {
			e.link = h.Linkname
		}
		var xs []string
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				xs = append(xs, strings.TrimPrefix(k, "SCHILY.xattr.")+"="+strconv.Quote(v))
			}
		}
		sort.Strings(xs)
		e.xattrs = strings.Join(xs, " ")
		if e.typ == tar.TypeReg {
			sum := sha256.New()
			if _, err := io.CopyBuffer(sum, tr, buf); err != nil {
				return nil, fmt.Errorf("read %s: %w", p, err)
			}
			e.content = "sha256:" + hex.EncodeToString(sum.Sum(nil))
		}
		if old, ok := le.files[p]; ok {
			e.count = old.count + 1
		} else {
			e.count = 1
			le.order = append(le.order, p)
		}
		le.files[p] = e
	}
}

// cleanPath is a tar entry name as an absolute, clean path.
func cleanPath(name string) string {
	return path.Clean("/" + strings.TrimPrefix(name, "./"))
}

func equalOrder(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// compareEntries lists the file differences between two layers, by path.
func compareEntries(a, b *layerEntries) []FileChange {
	paths := map[string]bool{}
	for p := range a.files {
		paths[p] = true
	}
	for p := range b.files {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	var out []FileChange
	for _, p := range sorted {
		x, y := a.files[p], b.files[p]
		switch {
		case y == nil:
			out = append(out, FileChange{Path: p, Field: "removed", Old: x.summary()})
		case x == nil:
			out = append(out, FileChange{Path: p, Field: "added", New: y.summary()})
		default:
			out = append(out, fieldChanges(p, x, y)...)
		}
	}
	return out
}

func fieldChanges(p string, x, y *entry) []FileChange {
	var out []FileChange
	add := func(field, old, new string) {
		if old != new {
			out = append(out, FileChange{Path: p, Field: field, Old: old, New: new})
		}
	}
	add("type", typeName(x.typ), typeName(y.typ))
	add("mode", fmt.Sprintf("%04o", x.mode), fmt.Sprintf("%04o", y.mode))
	add("owner", fmt.Sprintf("%d:%d", x.uid, x.gid), fmt.Sprintf("%d:%d", y.uid, y.gid))
	add("owner names", x.uname+":"+x.gname, y.uname+":"+y.gname)
	add("size", strconv.FormatInt(x.size, 10), strconv.FormatInt(y.size, 10))
	add("mtime", fmtTime(x.mtime), fmtTime(y.mtime))
	add("content", x.content, y.content)
	add("link", x.link, y.link)
	add("device", fmt.Sprintf("%d,%d", x.devmaj, x.devmin), fmt.Sprintf("%d,%d", y.devmaj, y.devmin))
	add("xattrs", x.xattrs, y.xattrs)
	add("atime", fmtTime(x.atime), fmtTime(y.atime))
	add("ctime", fmtTime(x.ctime), fmtTime(y.ctime))
	add("tar format", x.format.String(), y.format.String())
	add("duplicate", strconv.Itoa(x.count), strconv.Itoa(y.count))
	return out
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// summary describes a whole entry, for added and removed files.
func (e *entry) summary() string {
	s := fmt.Sprintf("%s %04o %d:%d", typeName(e.typ), e.mode, e.uid, e.gid)
	switch e.typ {
	case tar.TypeReg:
		s += fmt.Sprintf(" %d bytes %s", e.size, e.content)
	case tar.TypeSymlink, tar.TypeLink:
		s += " -> " + e.link
	case tar.TypeChar, tar.TypeBlock:
		s += fmt.Sprintf(" %d,%d", e.devmaj, e.devmin)
	}
	return s + " mtime " + fmtTime(e.mtime)
}

func typeName(t byte) string {
	switch t {
	case tar.TypeReg:
		return "file"
	case tar.TypeDir:
		return "dir"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar:
		return "char-device"
	case tar.TypeBlock:
		return "block-device"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("type %q", t)
}

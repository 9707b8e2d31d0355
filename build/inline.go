package build

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"builder/build/copier"
	"builder/build/fetch"
	"builder/parser"
)

// inlineFile is a COPY/ADD source that lives neither in the context nor in
// a stage: a heredoc body (mode 0644) or a file downloaded from an
// http(s) URL (mode 0600, mtime from Last-Modified), as BuildKit makes them.
type inlineFile struct {
	name     string // file name, as the destination sees it
	content  string // heredoc body, expanded
	url      string // "" for a heredoc
	checksum string // ADD --checksum, "" for none
	key      string // what identifies the file for the cache key
	path     string // host file once written or downloaded
	digest   string // "algo:hex" of a downloaded URL's content
}

// inlineSet holds the inline sources of one step, each in its own
// subdirectory of dir, so that a name with wildcard characters can only
// match itself.
type inlineSet struct {
	dir   string
	files []*inlineFile
}

// inlineSources collects the heredoc and URL sources of a COPY or ADD and
// what identifies them for the cache key. A URL without --checksum is
// downloaded now, since only its content can identify it; one with
// --checksum is keyed on the checksum and downloaded by materialize only
// when the step must run. The caller must call cleanup.
func (j *job) inlineSources(ctx context.Context, ex *expander, op *parser.Copy, urls []string) (*inlineSet, error) {
	s := &inlineSet{}
	if len(op.Heredocs) == 0 && len(urls) == 0 {
		return s, nil
	}
	dir, err := j.tempDir("inline-")
	if err != nil {
		return nil, err
	}
	s.dir = dir
	for _, h := range op.Heredocs {
		content, err := heredocContent(ex, h)
		if err != nil {
			s.cleanup()
			return nil, err
		}
		sum := sha256.Sum256([]byte(content))
		s.files = append(s.files, &inlineFile{name: h.Name, content: content,
			key: "heredoc " + strconv.Quote(h.Name) + " sha256:" + hex.EncodeToString(sum[:])})
	}
	checksum := ""
	if op.Checksum != "" {
		c, err := ex.word(op.Checksum)
		if err != nil {
			s.cleanup()
			return nil, err
		}
		if _, _, err := fetch.ParseChecksum(c); err != nil {
			s.cleanup()
			return nil, err
		}
		checksum = c
	}
	for _, u := range urls {
		f := &inlineFile{name: fetch.FileName(u), url: u, checksum: checksum}
		s.files = append(s.files, f)
		if checksum != "" {
			f.key = "url " + strconv.Quote(f.name) + " " + checksum
			continue
		}
		if err := s.download(ctx, len(s.files)-1); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	for _, f := range s.files {
		if f.url != "" {
			j.rec.noteHTTP(f.url, cmp.Or(f.checksum, f.digest))
		}
	}
	return s, nil
}

// key describes the inline sources for the cache key.
func (s *inlineSet) key() string {
	var parts []string
	for _, f := range s.files {
		parts = append(parts, f.key)
	}
	return strings.Join(parts, "\n")
}

// materialize writes the heredoc files and downloads the URLs not fetched
// yet.
func (s *inlineSet) materialize(ctx context.Context) error {
	for i, f := range s.files {
		if f.path != "" {
			continue
		}
		if f.url != "" {
			if err := s.download(ctx, i); err != nil {
				return err
			}
			continue
		}
		p, err := s.filePath(i)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
			return fmt.Errorf("write heredoc %s: %w", f.name, err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			return fmt.Errorf("write heredoc %s: %w", f.name, err)
		}
		f.path = p
	}
	return nil
}

// filePath makes the subdirectory of file i and returns its file path.
func (s *inlineSet) filePath(i int) (string, error) {
	name := s.files[i].name
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return "", fmt.Errorf("invalid file name %q", name)
	}
	sub := filepath.Join(s.dir, strconv.Itoa(i))
	if err := os.Mkdir(sub, 0o700); err != nil && !os.IsExist(err) {
		return "", err
	}
	return filepath.Join(sub, name), nil
}

// copyRequest returns the source and request that copy the inline files
// to the destination of base. Files get 0:0 unless base has Chown.
func (s *inlineSet) copyRequest(base copier.Request) (copier.Source, copier.Request) {
	req := base
	req.Sources = nil
	req.Excludes = nil
	req.Parents = false
	req.Add = false
	req.Extract = nil
	for i, f := range s.files {
		req.Sources = append(req.Sources, strconv.Itoa(i)+"/"+f.name)
	}
	return copier.Source{Root: s.dir, IsContext: true}, req
}

// cleanup removes the files. It is idempotent.
func (s *inlineSet) cleanup() {
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// download fetches URL file i into its place, verifying the checksum if
// one was given, and sets its key from the content digest and
// Last-Modified.
func (s *inlineSet) download(ctx context.Context, i int) error {
	f := s.files[i]
	p, err := s.filePath(i)
	if err != nil {
		return fmt.Errorf("download %s: %w", f.url, err)
	}
	res, err := fetch.Download(ctx, http.DefaultClient, f.url, p, f.checksum)
	if err != nil {
		return err
	}
	f.path = p
	f.digest = res.Digest
	if f.checksum == "" {
		f.key = "url " + strconv.Quote(f.name) + " " + res.Digest + " " + strconv.Quote(res.LastModified)
	}
	return nil
}

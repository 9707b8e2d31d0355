package build

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"builder/build/copier"
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
}

// inlineSet holds the inline sources of one step, each in its own
// subdirectory of dir, so that a name with wildcard characters can only
// match itself.
type inlineSet struct {
	dir   string
	files []*inlineFile
}

// isGitSource reports whether an ADD source is a Git repository, which
// BuildKit clones.
func isGitSource(s string) bool {
	if strings.HasPrefix(s, "git@") || strings.HasPrefix(s, "git://") || strings.HasPrefix(s, "ssh://") {
		return true
	}
	if !isHTTPSource(s) {
		return false
	}
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	return strings.HasSuffix(u.Path, ".git")
}

// isHTTPSource reports whether an ADD source is an http(s) URL.
func isHTTPSource(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// urlFileName is the name BuildKit gives a downloaded file: the last
// element of the URL path, or "__unnamed__".
func urlFileName(raw string) string {
	u, err := url.Parse(raw)
	if err == nil {
		if base := path.Base(u.Path); base != "." && base != "/" && base != "" {
			return base
		}
	}
	return "__unnamed__"
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
		if _, _, err := parseChecksum(c); err != nil {
			s.cleanup()
			return nil, err
		}
		checksum = c
	}
	for _, u := range urls {
		f := &inlineFile{name: urlFileName(u), url: u, checksum: checksum}
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

// download fetches URL file i into its place, streaming, verifying the
// checksum if one was given, and sets its key from the content digest and
// Last-Modified.
func (s *inlineSet) download(ctx context.Context, i int) error {
	f := s.files[i]
	p, err := s.filePath(i)
	if err != nil {
		return fmt.Errorf("download %s: %w", f.url, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return fmt.Errorf("download %s: %w", f.url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w", f.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return fmt.Errorf("download %s: invalid response status %s", f.url, resp.Status)
	}
	algo, want := "sha256", ""
	if f.checksum != "" {
		algo, want, _ = parseChecksum(f.checksum)
	}
	h := newHash(algo)
	out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("download %s: %w", f.url, err)
	}
	_, err = io.Copy(io.MultiWriter(out, h), resp.Body)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return fmt.Errorf("download %s: %w", f.url, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		os.Remove(p)
		return fmt.Errorf("download %s: digest mismatch: got %s:%s, want %s", f.url, algo, got, f.checksum)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		return fmt.Errorf("download %s: %w", f.url, err)
	}
	lastMod := resp.Header.Get("Last-Modified")
	if t, err := http.ParseTime(lastMod); err == nil {
		if err := os.Chtimes(p, t, t); err != nil {
			return fmt.Errorf("download %s: %w", f.url, err)
		}
	} else {
		lastMod = ""
	}
	f.path = p
	if f.checksum == "" {
		f.key = "url " + strconv.Quote(f.name) + " " + algo + ":" + got + " " + strconv.Quote(lastMod)
	}
	return nil
}

// parseChecksum splits an ADD --checksum value "algo:hex".
func parseChecksum(c string) (string, string, error) {
	algo, hexDigest, ok := strings.Cut(c, ":")
	size := map[string]int{"sha256": 64, "sha384": 96, "sha512": 128}[algo]
	if !ok || size == 0 {
		return "", "", fmt.Errorf("invalid checksum %q: want sha256:<hex>, sha384:<hex> or sha512:<hex>", c)
	}
	if _, err := hex.DecodeString(hexDigest); err != nil || len(hexDigest) != size || strings.ToLower(hexDigest) != hexDigest {
		return "", "", fmt.Errorf("invalid checksum %q: bad %s digest", c, algo)
	}
	return algo, hexDigest, nil
}

func newHash(algo string) hash.Hash {
	switch algo {
	case "sha384":
		return sha512.New384()
	case "sha512":
		return sha512.New()
	default:
		return sha256.New()
	}
}

// Package fetch downloads the http(s) sources of ADD as BuildKit does:
// it recognises URL sources (Git sources are build/gitsrc's), names a
// downloaded file, checks an ADD --checksum value and streams a download
// into a file while hashing it, verifying the checksum and taking the
// file's mtime from the Last-Modified header. It keeps no state: the caller says where each
// file goes and which HTTP client fetches it.
package fetch

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
	"strings"
)

// IsHTTP reports whether an ADD source is an http(s) URL.
func IsHTTP(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// FileName is the name BuildKit gives a downloaded file: the last
// element of the URL path, or "__unnamed__".
func FileName(raw string) string {
	u, err := url.Parse(raw)
	if err == nil {
		if base := path.Base(u.Path); base != "." && base != "/" && base != "" {
			return base
		}
	}
	return "__unnamed__"
}

// ParseChecksum splits an ADD --checksum value "algo:hex" and checks it:
// algo is sha256, sha384 or sha512, hex a lower-case digest of its size.
func ParseChecksum(c string) (algo, hexDigest string, err error) {
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

// Result describes a downloaded file.
type Result struct {
	// Digest is "algo:hex" of the content: the checksum's algorithm if
	// one was given, else sha256.
	Digest string
	// LastModified is the Last-Modified header, "" when the response had
	// none that parses; the file's mtime is set from it.
	LastModified string
}

// Download fetches rawURL with client into the new file p (mode 0600),
// streaming and hashing it. When checksum ("algo:hex", checked with
// ParseChecksum) is not empty the content must match it. On error p does
// not exist, unless setting its mode or mtime failed. Errors name the URL.
func Download(ctx context.Context, client *http.Client, rawURL, p, checksum string) (Result, error) {
	res, err := download(ctx, client, rawURL, p, checksum)
	if err != nil {
		return Result{}, fmt.Errorf("download %s: %w", rawURL, err)
	}
	return res, nil
}

// download does the work of Download; its errors do not name the URL.
func download(ctx context.Context, client *http.Client, rawURL, p, checksum string) (Result, error) {
	algo, want := "sha256", ""
	if checksum != "" {
		var err error
		if algo, want, err = ParseChecksum(checksum); err != nil {
			return Result{}, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return Result{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return Result{}, fmt.Errorf("invalid response status %s", resp.Status)
	}
	h := newHash(algo)
	out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return Result{}, err
	}
	_, err = io.Copy(io.MultiWriter(out, h), resp.Body)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return Result{}, err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		os.Remove(p)
		return Result{}, fmt.Errorf("digest mismatch: got %s:%s, want %s", algo, got, checksum)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		return Result{}, err
	}
	lastMod := resp.Header.Get("Last-Modified")
	if t, err := http.ParseTime(lastMod); err == nil {
		if err := os.Chtimes(p, t, t); err != nil {
			return Result{}, err
		}
	} else {
		lastMod = ""
	}
	return Result{Digest: algo + ":" + got, LastModified: lastMod}, nil
}

// newHash returns a new hash of algo: sha384, sha512, else sha256.
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

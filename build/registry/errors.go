package registry

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Describe renders err as one short line for people: network and registry
// errors, which arrive as long URL-laden strings, are replaced by what they
// mean (for example "connection refused" or "unauthorized: authentication
// required"); the context that wraps them (such as "blob sha256:…: ") is
// kept. It only formats: err itself keeps its type for errors.As.
func Describe(err error) string {
	msg := err.Error()
	var terr *transport.Error
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		msg = replaceSuffix(msg, networkText(err), "connection reset")
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = replaceSuffix(msg, networkText(err), "connection closed before the body was complete")
	case errors.As(err, &dnsErr):
		return "cannot resolve " + dnsErr.Name
	case errors.As(err, &terr):
		msg = replaceSuffix(msg, terr.Error(), registryError(terr))
	}
	return strings.Join(strings.Fields(msg), " ")
}

// networkText returns the text of the outermost URL or network error in
// err's chain (which repeats the URL and addresses), else of the innermost
// error.
func networkText(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Error()
	}
	var operr *net.OpError
	if errors.As(err, &operr) {
		return operr.Error()
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// replaceSuffix swaps the inner error text at the end of msg for short.
func replaceSuffix(msg, inner, short string) string {
	if strings.HasSuffix(msg, inner) {
		return strings.TrimSuffix(msg, inner) + short
	}
	return short
}

// registryError says what a registry's error response means.
func registryError(e *transport.Error) string {
	if len(e.Errors) == 0 {
		if e.StatusCode == http.StatusUnauthorized {
			return "unauthorized: authentication required"
		}
		return fmt.Sprintf("registry answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	d := e.Errors[0]
	switch d.Code {
	case transport.ManifestUnknownErrorCode:
		return "manifest unknown (no such tag or digest)"
	case transport.NameUnknownErrorCode:
		return "repository not found"
	case transport.BlobUnknownErrorCode:
		return "blob unknown to the registry"
	case transport.UnauthorizedErrorCode:
		if d.Message == "" {
			return "unauthorized: authentication required"
		}
		return "unauthorized: " + d.Message
	}
	code := strings.ToLower(strings.ReplaceAll(string(d.Code), "_", " "))
	if d.Message == "" {
		return code
	}
	return code + ": " + d.Message
}

package pull

import "github.com/google/go-containerregistry/pkg/name"

// ParseReference parses ref with Docker's defaults ("busybox" is
// docker.io/library/busybox:latest). A registry PlainHTTP accepts is marked
// name.Insecure, so ggcr speaks plain HTTP to it. Push and login use it, so
// that every command reaches a registry the same way.
func ParseReference(ref string, insecure []string) (name.Reference, error) {
	return parseRef(ref, insecure)
}

// PlainHTTP reports whether registry ("host" or "host:port") is spoken to
// over plain HTTP: loopback addresses, localhost, and the hosts of the
// insecure list (an entry matches host:port exactly or the host alone).
func PlainHTTP(registry string, insecure []string) bool {
	return plainHTTP(registry, insecure)
}

// Describe renders a registry or network error as one short line (for
// example "connection refused" or "unauthorized: authentication required"),
// keeping the context that wraps it.
func Describe(err error) string { return describe(err) }

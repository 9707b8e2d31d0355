// Package namedctx parses --build-context values, as buildx resolves them,
// and imports the images of oci-layout:// contexts into the content store.
//
// A named context replaces, for FROM, COPY --from and RUN --mount from=,
// the stage or image of its name: a local directory (with its own
// .dockerignore), an image in a registry (docker-image://REF), an image in
// an OCI layout directory (oci-layout://PATH[:TAG][@DIGEST]), a git
// repository or a file at an https URL. Names match the way image
// references do: "alpine", "alpine:latest" and "docker.io/library/alpine"
// are one name.
package namedctx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/fetch"
	"builder/build/gitsrc"
	"builder/imageref"
)

// Kind says what a named context is.
type Kind string

// The kinds of named context.
const (
	Local     Kind = "local"        // a directory of the host
	Image     Kind = "docker-image" // an image in a registry (or the store)
	OCILayout Kind = "oci-layout"   // an image in an OCI layout directory
	Git       Kind = "git"          // a git repository, cloned
	URL       Kind = "url"          // a file at an http(s) URL, named "context"
)

// Context is one parsed --build-context.
type Context struct {
	Name  string // as given
	Key   string // Name normalized as an image reference (see Normalize)
	Kind  Kind
	Path  string // Local: the absolute directory; OCILayout: the layout directory
	Ref   string // Image: the reference; Git, URL: the URL
	Tag   string // OCILayout: the tag to look up when Digest is empty
	Value string // the value as given
	// Digest is the manifest (or index) digest of an OCILayout context,
	// given or else looked up by Tag.
	Digest string
}

// Normalize returns the key a name is matched by: its full image
// reference form (Docker's rules: "alpine" is
// "docker.io/library/alpine:latest"). ok is false for a name that is no
// valid reference and so can match nothing.
func Normalize(name string) (key string, ok bool) {
	k, err := imageref.Normalize(name)
	return k, err == nil
}

// Parse parses "NAME=VALUE" as buildx does. A relative directory is made
// absolute against the current directory; a directory must exist.
func Parse(spec string) (Context, error) {
	name, value, ok := strings.Cut(spec, "=")
	if !ok || name == "" || value == "" {
		return Context{}, fmt.Errorf("--build-context %q: want NAME=VALUE", spec)
	}
	c := Context{Name: name, Value: value}
	fail := func(format string, args ...any) (Context, error) {
		return Context{}, fmt.Errorf("--build-context %s: %s", name, fmt.Sprintf(format, args...))
	}
	if strings.EqualFold(name, "scratch") || strings.EqualFold(name, "context") {
		return fail("the name %s is reserved", name)
	}
	if c.Key, ok = Normalize(name); !ok || strings.Contains(name, "@") {
		return fail("invalid context name: use a stage or image name")
	}
	switch {
	case gitsrc.IsGit(value):
		c.Kind, c.Ref = Git, value
	case fetch.IsHTTP(value):
		c.Kind, c.Ref = URL, value
	case strings.HasPrefix(value, "docker-image://"):
		c.Kind, c.Ref = Image, strings.TrimPrefix(value, "docker-image://")
		if _, err := imageref.Normalize(c.Ref); err != nil {
			return fail("%v", err)
		}
	case strings.HasPrefix(value, "oci-layout://"):
		c.Kind = OCILayout
		if err := c.parseLayout(strings.TrimPrefix(value, "oci-layout://")); err != nil {
			return fail("%v", err)
		}
	case strings.HasPrefix(value, "target:"), strings.Contains(value, "://"):
		return fail("unsupported context source %q", value)
	default:
		abs, err := filepath.Abs(value)
		if err != nil {
			return fail("%v", err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return fail("%v", err)
		}
		if !fi.IsDir() {
			return fail("%s is not a directory", value)
		}
		c.Kind, c.Path = Local, abs
	}
	return c, nil
}

// parseLayout parses PATH[:TAG][@DIGEST]; TAG defaults to "latest".
func (c *Context) parseLayout(s string) error {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		if _, err := v1.NewHash(s[i+1:]); err != nil {
			return fmt.Errorf("oci-layout digest %q: %w", s[i+1:], err)
		}
		s, c.Digest = s[:i], s[i+1:]
	}
	c.Tag = "latest"
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		s, c.Tag = s[:i], s[i+1:]
		if c.Tag == "" {
			return errors.New("oci-layout reference has an empty tag")
		}
	}
	if s == "" {
		return errors.New("oci-layout reference has no path")
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return err
	}
	fi, err := os.Stat(filepath.Join(abs, "index.json"))
	if err != nil {
		return fmt.Errorf("%s is not an OCI layout: %w", s, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not an OCI layout: index.json is not a regular file", s)
	}
	c.Path = abs
	return nil
}

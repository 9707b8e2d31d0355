// The registry configuration file: mirrors, plain HTTP and TLS settings per
// registry, in the shape of the [registry."…"] section of BuildKit's
// buildkitd.toml:
//
//	[registry."docker.io"]
//	  mirrors = ["127.0.0.1:5000", "mirror.example/dockerhub"]
//	[registry."127.0.0.1:5001"]
//	  http = true      # plain HTTP
//	  insecure = true  # HTTPS without certificate verification
//	  ca = ["/etc/ssl/private-ca.pem"]
//
// A Config is read once (Load, LoadDefault) and is immutable afterwards, so
// it may be shared by concurrent pulls and pushes. A nil *Config is valid
// and means "no file": only the built-in rules apply (loopback registries
// are spoken to over plain HTTP).

package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/name"
)

// EnvConfig names the environment variable that overrides DefaultPath.
const EnvConfig = "BUILDER_REGISTRY_CONFIG"

// Host is the configuration of one registry.
type Host struct {
	// Mirrors are tried in order before the registry itself when pulling
	// ("host[:port]" or "host[:port]/path-prefix"). Pushes never use them.
	// A mirror's own http/insecure/ca settings come from its own section.
	Mirrors []string `toml:"mirrors"`
	// HTTP makes the registry be spoken to over plain HTTP.
	HTTP bool `toml:"http"`
	// Insecure skips TLS certificate verification.
	Insecure bool `toml:"insecure"`
	// CA lists PEM files of extra certificate authorities to trust.
	CA []string `toml:"ca"`
}

// Config is a parsed registry configuration file.
type Config struct {
	path  string
	hosts map[string]Host // by canonical registry name (see key)
	pools map[string]*x509.CertPool
}

// file is the TOML document; other top-level tables of a buildkitd.toml
// are ignored.
type file struct {
	Registry map[string]Host `toml:"registry"`
}

// DefaultPath is where the configuration is looked for when neither the
// --registry-config flag nor BUILDER_REGISTRY_CONFIG names a file:
// /etc/builder/registries.toml for root, else
// $XDG_CONFIG_HOME/builder/registries.toml (~/.config/builder/…).
func DefaultPath() string {
	if os.Geteuid() == 0 {
		return "/etc/builder/registries.toml"
	}
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "builder", "registries.toml")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "builder", "registries.toml")
}

// LoadDefault reads the file named by BUILDER_REGISTRY_CONFIG, which must
// exist, or else DefaultPath, which may be missing (then the result is an
// empty Config).
func LoadDefault() (*Config, error) {
	if p := os.Getenv(EnvConfig); p != "" {
		return Load(p)
	}
	p := DefaultPath()
	if p == "" {
		return &Config{}, nil
	}
	c, err := Load(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{path: p}, nil
	}
	return c, err
}

// Load reads and checks the configuration file at path: unknown keys in a
// registry section, malformed mirror entries and unreadable CA files are
// errors naming the file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read registry config: %w", err)
	}
	c, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("registry config %s: %w", path, err)
	}
	c.path = path
	return c, nil
}

// Parse reads a configuration from TOML text; relative CA paths are taken
// relative to the working directory.
func Parse(text string) (*Config, error) {
	var f file
	md, err := toml.Decode(text, &f)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for _, k := range md.Undecoded() {
		if len(k) > 0 && k[0] == "registry" {
			unknown = append(unknown, k.String())
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown key %s (known: mirrors, http, insecure, ca)", strings.Join(unknown, ", "))
	}
	c := &Config{hosts: map[string]Host{}, pools: map[string]*x509.CertPool{}}
	for reg, h := range f.Registry {
		k, err := key(reg)
		if err != nil {
			return nil, fmt.Errorf("registry %q: %w", reg, err)
		}
		if _, dup := c.hosts[k]; dup {
			return nil, fmt.Errorf("registry %q is configured twice", reg)
		}
		for _, m := range h.Mirrors {
			if err := checkMirror(m); err != nil {
				return nil, fmt.Errorf("registry %q: mirror %q: %w", reg, m, err)
			}
		}
		if len(h.CA) > 0 {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			for _, p := range h.CA {
				pem, err := os.ReadFile(p)
				if err != nil {
					return nil, fmt.Errorf("registry %q: ca: %w", reg, err)
				}
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("registry %q: ca %s: no PEM certificate", reg, p)
				}
			}
			c.pools[k] = pool
		}
		c.hosts[k] = h
	}
	return c, nil
}

// key canonicalizes a registry name: "docker.io" and "index.docker.io"
// are one registry.
func key(registry string) (string, error) {
	if registry == "" || strings.ContainsAny(registry, "/ ") || strings.Contains(registry, "://") {
		return "", errors.New("want host or host:port")
	}
	r, err := name.NewRegistry(registry)
	if err != nil {
		return "", err
	}
	return r.RegistryStr(), nil
}

// checkMirror accepts "host[:port]" and "host[:port]/path".
func checkMirror(m string) error {
	if strings.Contains(m, "://") {
		return errors.New("give host[:port][/path] without a scheme; set http = true in the mirror's own section for plain HTTP")
	}
	host, path, _ := strings.Cut(m, "/")
	if _, err := key(host); err != nil {
		return err
	}
	if path != "" {
		if _, err := name.NewRepository(host + "/" + path); err != nil {
			return err
		}
	}
	return nil
}

// Path is the file the configuration was read from, or "" if none.
func (c *Config) Path() string {
	if c == nil {
		return ""
	}
	return c.path
}

// Host returns the settings of registry ("host" or "host:port"): the
// section naming it exactly, else the section naming its host without the
// port, else the zero Host.
func (c *Config) Host(registry string) Host {
	h, _ := c.lookup(registry)
	return h
}

func (c *Config) lookup(registry string) (Host, string) {
	if c == nil {
		return Host{}, ""
	}
	k, err := key(registry)
	if err != nil {
		k = registry
	}
	if h, ok := c.hosts[k]; ok {
		return h, k
	}
	if host, _, err := net.SplitHostPort(k); err == nil {
		if h, ok := c.hosts[host]; ok {
			return h, host
		}
	}
	return Host{}, ""
}

// Mirrors returns the mirrors of registry, in the order to try them.
func (c *Config) Mirrors(registry string) []string {
	return c.Host(registry).Mirrors
}

// PlainHTTP reports whether registry ("host" or "host:port") is spoken to
// over plain HTTP: loopback addresses and localhost always are, and so are
// registries with http = true and those in extra (the --insecure-registry
// list; an entry matches host:port exactly or the host alone).
func (c *Config) PlainHTTP(registry string, extra []string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, in := range extra {
		if in == registry || in == host {
			return true
		}
	}
	return c.Host(registry).HTTP
}

// ParseReference parses ref with Docker's defaults ("busybox" is
// docker.io/library/busybox:latest), marking it name.Insecure when its
// registry is spoken to over plain HTTP (see PlainHTTP).
func (c *Config) ParseReference(ref string, extra []string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if c.PlainHTTP(r.Context().RegistryStr(), extra) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

// MirrorReference names the image ref names on mirror ("host[:port]" or
// "host[:port]/prefix"): the same repository path and tag or digest, on
// the mirror's host under its prefix.
func (c *Config) MirrorReference(ref name.Reference, mirror string, extra []string) (name.Reference, error) {
	repo := strings.TrimSuffix(mirror, "/") + "/" + ref.Context().RepositoryStr()
	host, _, _ := strings.Cut(mirror, "/")
	var opts []name.Option
	if c.PlainHTTP(host, extra) {
		opts = append(opts, name.Insecure)
	}
	if d, ok := ref.(name.Digest); ok {
		return name.NewDigest(repo+"@"+d.DigestStr(), opts...)
	}
	return name.NewTag(repo+":"+ref.Identifier(), opts...)
}

// Transport returns base adjusted for registry: with insecure = true
// certificates are not verified, with ca = [...] those authorities are
// trusted too. base must be an *http.Transport for that (it is cloned, not
// changed); any other round tripper, and any registry without TLS
// settings, gets base back unchanged.
func (c *Config) Transport(registry string, base http.RoundTripper) http.RoundTripper {
	if c == nil {
		return base
	}
	h, k := c.lookup(registry)
	if !h.Insecure && c.pools[k] == nil {
		return base
	}
	t, ok := base.(*http.Transport)
	if !ok {
		return base
	}
	t = t.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{}
	}
	if h.Insecure {
		t.TLSClientConfig.InsecureSkipVerify = true
	}
	if p := c.pools[k]; p != nil {
		t.TLSClientConfig.RootCAs = p
	}
	return t
}

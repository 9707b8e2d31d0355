package registry

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func TestLoad(t *testing.T) {
	c, err := Load("testdata/registries.toml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		registry string
		mirrors  string
		http     bool
		insecure bool
	}{
		{"docker.io", "127.0.0.1:5000 mirror.example/dockerhub", false, false},
		{"index.docker.io", "127.0.0.1:5000 mirror.example/dockerhub", false, false},
		{"127.0.0.1:5001", "", true, true},
		{"reg.example", "", false, true},
		{"reg.example:443", "", false, true}, // the host's section applies to any port
		{"other.example", "", false, false},
	}
	for _, tt := range tests {
		h := c.Host(tt.registry)
		if strings.Join(h.Mirrors, " ") != tt.mirrors || h.HTTP != tt.http || h.Insecure != tt.insecure {
			t.Errorf("Host(%q) = %+v", tt.registry, h)
		}
	}
	if c.Path() != "testdata/registries.toml" {
		t.Errorf("Path = %q", c.Path())
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"unknown-key.toml", `unknown key registry."docker.io".mirror`},
		{"scheme-mirror.toml", "without a scheme"},
		{"bad-toml.toml", "line "},
		{"duplicate.toml", "configured twice"},
		{"missing-ca.toml", "no-such-ca.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.file) {
				t.Errorf("err = %v, want the file name and %q", err, tt.want)
			}
		})
	}
	if _, err := Load("testdata/none.toml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadDefault(t *testing.T) {
	t.Setenv(EnvConfig, "testdata/registries.toml")
	c, err := LoadDefault()
	if err != nil || len(c.Mirrors("docker.io")) != 2 {
		t.Fatalf("LoadDefault with %s = %+v, %v", EnvConfig, c, err)
	}
	// A file named explicitly must exist.
	t.Setenv(EnvConfig, "testdata/none.toml")
	if _, err := LoadDefault(); err == nil {
		t.Error("missing file named by the environment was accepted")
	}
	// The default file may be missing.
	t.Setenv(EnvConfig, "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	c, err = LoadDefault()
	if err != nil || len(c.Mirrors("docker.io")) != 0 {
		t.Fatalf("LoadDefault without a file = %+v, %v", c, err)
	}
	if os.Geteuid() != 0 {
		xdg := os.Getenv("XDG_CONFIG_HOME")
		if DefaultPath() != filepath.Join(xdg, "builder", "registries.toml") {
			t.Errorf("DefaultPath = %q", DefaultPath())
		}
	} else if DefaultPath() != "/etc/builder/registries.toml" {
		t.Errorf("DefaultPath = %q", DefaultPath())
	}
}

func TestPlainHTTP(t *testing.T) {
	c, err := Load("testdata/registries.toml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cfg      *Config
		registry string
		extra    []string
		want     bool
	}{
		{nil, "127.0.0.1:5000", nil, true},
		{nil, "[::1]:5000", nil, true},
		{nil, "localhost", nil, true},
		{nil, "reg.localhost:80", nil, true},
		{nil, "localhostx:5000", nil, false},
		{nil, "index.docker.io", nil, false},
		{nil, "reg.example:5000", []string{"reg.example"}, true},
		{nil, "reg.example:5000", []string{"reg.example:6000"}, false},
		{c, "127.0.0.1:5001", nil, true},
		{c, "reg.example", nil, false}, // insecure is TLS without verification, not HTTP
		{c, "10.0.0.1:5000", nil, false},
	}
	for _, tt := range tests {
		if got := tt.cfg.PlainHTTP(tt.registry, tt.extra); got != tt.want {
			t.Errorf("PlainHTTP(%q, %v) = %v, want %v", tt.registry, tt.extra, got, tt.want)
		}
	}
}

func TestMirrorReference(t *testing.T) {
	c, err := Parse(`[registry."mirror.example"]
  http = true
`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ref, mirror, want string
		insecure          bool
	}{
		{"busybox", "127.0.0.1:5000", "127.0.0.1:5000/library/busybox:latest", true},
		{"docker.io/library/busybox:1.36", "mirror.example/hub", "mirror.example/hub/library/busybox:1.36", true},
		{"ghcr.io/o/app@sha256:" + strings.Repeat("a", 64), "m.example:8443/", "m.example:8443/o/app@sha256:" + strings.Repeat("a", 64), false},
	}
	for _, tt := range tests {
		r, err := name.ParseReference(tt.ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.MirrorReference(r, tt.mirror, nil)
		if err != nil {
			t.Fatalf("MirrorReference(%s, %s): %v", tt.ref, tt.mirror, err)
		}
		if got.String() != tt.want || (got.Context().Scheme() == "http") != tt.insecure {
			t.Errorf("MirrorReference(%s, %s) = %s (%s), want %s", tt.ref, tt.mirror, got, got.Context().Scheme(), tt.want)
		}
	}
}

func TestTransport(t *testing.T) {
	c, err := Load("testdata/registries.toml")
	if err != nil {
		t.Fatal(err)
	}
	base := &http.Transport{}
	if got := c.Transport("other.example", base); got != http.RoundTripper(base) {
		t.Error("a registry without TLS settings got another transport")
	}
	got, ok := c.Transport("reg.example", base).(*http.Transport)
	if !ok || got == base || got.TLSClientConfig == nil || !got.TLSClientConfig.InsecureSkipVerify {
		t.Errorf("insecure registry transport = %+v", got)
	}
	if base.TLSClientConfig != nil && base.TLSClientConfig.InsecureSkipVerify {
		t.Error("the base transport was changed")
	}
	if (*Config)(nil).Transport("reg.example", base) != http.RoundTripper(base) {
		t.Error("nil config changed the transport")
	}
}

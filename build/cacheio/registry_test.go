package cacheio

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"builder/build/buildtest"
	"builder/build/registry"
	"builder/snapshot/content"
)

// configFrom writes testdata/<tmpl> with the replacements to a temporary
// file and returns its path.
func configFrom(t *testing.T, tmpl, name string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", tmpl))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(strings.NewReplacer(repl...).Replace(string(b))), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestImportMirrorOnly imports a cache whose registry is reachable only as
// a mirror listed in the registry configuration, as a FROM pull of it
// works: the manifest, config and layer blobs all come from the mirror.
func TestImportMirrorOnly(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	s, cfg := storeWith(t)
	mirror := buildtest.Registry(t)
	origin := closedAddr(t)
	ctx := context.Background()
	if _, err := Export(ctx, Spec{Type: TypeRegistry, Ref: mirror + "/prefix/cache/app:c"}, cfg, s, testClient()); err != nil {
		t.Fatal(err)
	}
	conf, err := registry.Load(configFrom(t, "mirror-only.toml.tmpl", "registries.toml", "ORIGIN", origin, "MIRROR", mirror))
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Type: TypeRegistry, Ref: origin + "/cache/app:c"}
	if _, err := Import(ctx, spec, testClient()); err == nil {
		t.Fatal("imported from a closed port without the mirror configuration")
	}
	c, err := Import(ctx, spec, registry.New(registry.Options{Config: conf}))
	if err != nil {
		t.Fatalf("import through the mirror: %v", err)
	}
	dst := openTestStore(t)
	for _, r := range cfg.Records {
		if !r.Empty {
			if err := c.Fetch(ctx, dst, r.Digest); err != nil {
				t.Fatalf("fetch through the mirror: %v", err)
			}
		}
	}
}

// tlsRegistry serves ggcr's registry over TLS with the httptest
// certificate (valid for example.com), requiring basic auth user:pass. It
// returns a client option set whose transport dials every address to it,
// so "example.com" stays on loopback, and the PEM file of its certificate.
func tlsRegistry(t *testing.T, user, pass string) (http.RoundTripper, string) {
	t.Helper()
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	rt := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(rt.CloseIdleConnections)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return rt, ca
}

// TestRoundTripTLSCredentials exports and imports a cache on a TLS
// registry that trusts only a private CA (ca = [...] in the registry
// configuration) and wants the credentials of config.json. Without either
// the export fails, with the registry's answer kept as a *transport.Error.
func TestRoundTripTLSCredentials(t *testing.T) {
	rt, ca := tlsRegistry(t, "builder", "s3cret")
	dockerDir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("builder:s3cret"))
	b, err := os.ReadFile(configFrom(t, "docker-config.json.tmpl", "config.json", "AUTH", auth))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dockerDir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	conf, err := registry.Load(configFrom(t, "tls-ca.toml.tmpl", "registries.toml", "CAFILE", ca))
	if err != nil {
		t.Fatal(err)
	}
	s, cfg := storeWith(t)
	ctx := context.Background()
	spec := Spec{Type: TypeRegistry, Ref: "example.com/cache/app:c"}

	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials
	_, err = Export(ctx, spec, cfg, s, registry.New(registry.Options{Config: conf, Transport: rt}))
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("export without credentials: %v, want a 401 *transport.Error", err)
	}
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("error %q: want one line saying unauthorized", err)
	}

	t.Setenv("DOCKER_CONFIG", dockerDir)
	if _, err := Export(ctx, spec, cfg, s, registry.New(registry.Options{Transport: rt})); err == nil {
		t.Fatal("export to a registry whose CA is not trusted succeeded")
	}
	rc := registry.New(registry.Options{Config: conf, Transport: rt})
	d, err := Export(ctx, spec, cfg, s, rc)
	if err != nil {
		t.Fatalf("export with CA and credentials: %v", err)
	}
	c, err := Import(ctx, spec, rc)
	if err != nil {
		t.Fatalf("import with CA and credentials: %v", err)
	}
	if c.Manifest != d {
		t.Errorf("imported manifest %s, exported %s", c.Manifest, d)
	}
	dst := openTestStore(t)
	for _, r := range cfg.Records {
		if !r.Empty {
			if err := c.Fetch(ctx, dst, r.Digest); err != nil {
				t.Fatalf("fetch: %v", err)
			}
		}
	}
}

func openTestStore(t *testing.T) *content.Store {
	t.Helper()
	s, err := content.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

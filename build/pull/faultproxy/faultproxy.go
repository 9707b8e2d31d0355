// Package faultproxy is a loopback reverse proxy for tests that puts
// registry faults between a client and a registry: error statuses, reset
// connections, bodies cut short and bodies with a flipped byte, on a
// bounded, deterministic schedule ("the first N requests for each blob").
//
// A Proxy is started by Start and closed when the test ends. It forwards
// the Host header unchanged, so the upload locations a registry hands out
// point back at the proxy.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Fault is what the proxy does to one request.
type Fault int

const (
	// Pass forwards the request untouched.
	Pass Fault = iota
	// Status500 answers 500 Internal Server Error without forwarding.
	Status500
	// Status503 answers 503 Service Unavailable without forwarding.
	Status503
	// Reset closes the client's connection with a TCP reset before any
	// response, without forwarding.
	Reset
	// Truncate forwards the request and sends the response's headers (with
	// the full Content-Length) and the first half of its body, then drops
	// the connection.
	Truncate
	// Corrupt forwards the request and flips one byte in the middle of the
	// response body.
	Corrupt
)

func (f Fault) String() string {
	return [...]string{"pass", "500", "503", "reset", "truncate", "corrupt"}[f]
}

// Rule says which requests get faults and which.
type Rule struct {
	// Match selects the requests the rule applies to.
	Match func(*http.Request) bool
	// Key groups matching requests for the schedule; default the URL path.
	Key func(*http.Request) string
	// Faults is the schedule of each key: its k-th matching request gets
	// Faults[k]; later requests get Then.
	Faults []Fault
	// Then is the fault of requests past the schedule; Pass by default, so
	// the schedule is bounded.
	Then Fault
	// Every, if above 1, spaces Then out: of the requests past the
	// schedule only every Every-th (per key) gets it, the others pass.
	Every int
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// Addr is the proxy's 127.0.0.1:PORT; use it as the registry host.
	Addr string

	rules []Rule
	rp    *httputil.ReverseProxy

	mu       sync.Mutex
	seen     []map[string]int // per rule: matching requests per key
	injected map[Fault]int
}

// Start proxies to the registry at target ("host:port", plain HTTP) with
// the rules, the first matching rule deciding. It is closed at test end.
func Start(t testing.TB, target string, rules ...Rule) *Proxy {
	t.Helper()
	u := &url.URL{Scheme: "http", Host: target}
	p := &Proxy{rules: rules, injected: map[Fault]int{}}
	for range rules {
		p.seen = append(p.seen, map[string]int{})
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			switch resp.Request.Context().Value(faultKey{}) {
			case Truncate:
				if resp.ContentLength > 1 {
					resp.Body = &truncated{rc: resp.Body, left: resp.ContentLength / 2}
				}
			case Corrupt:
				resp.Body = &flipper{rc: resp.Body, at: max(resp.ContentLength/2, 0)}
			}
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
		// Flush every write, so a truncated body reaches the client as
		// headers and a short body, not as a connection closed early.
		FlushInterval: -1,
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	p.Addr = srv.Listener.Addr().String()
	return p
}

type faultKey struct{}

func contextWith(r *http.Request, f Fault) context.Context {
	return context.WithValue(r.Context(), faultKey{}, f)
}

// Injected returns how many requests got fault f so far.
func (p *Proxy) Injected(f Fault) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.injected[f]
}

// Seen returns how many requests matched rule i under key so far.
func (p *Proxy) Seen(i int, key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[i][key]
}

// fault decides the fault of r and counts it.
func (p *Proxy) fault(r *http.Request) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, rule := range p.rules {
		if rule.Match != nil && !rule.Match(r) {
			continue
		}
		key := r.URL.Path
		if rule.Key != nil {
			key = rule.Key(r)
		}
		k := p.seen[i][key]
		p.seen[i][key] = k + 1
		f := rule.Then
		if k < len(rule.Faults) {
			f = rule.Faults[k]
		} else if rule.Every > 1 && (k-len(rule.Faults)+1)%rule.Every != 0 {
			f = Pass
		}
		if f != Pass {
			p.injected[f]++
		}
		return f
	}
	return Pass
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	f := p.fault(r)
	switch f {
	case Status500, Status503:
		if r.Body != nil {
			io.Copy(io.Discard, r.Body)
		}
		code := http.StatusInternalServerError
		if f == Status503 {
			code = http.StatusServiceUnavailable
		}
		http.Error(w, "injected fault", code)
		return
	case Reset:
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic("faultproxy: connection cannot be hijacked")
		}
		conn, _, err := hj.Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close with RST, not FIN
		}
		conn.Close()
		return
	}
	if f == Truncate || f == Corrupt {
		r = r.WithContext(contextWith(r, f))
	}
	p.rp.ServeHTTP(w, r)
}

// truncated yields left bytes of rc, then fails, so the proxy aborts the
// response mid-body.
type truncated struct {
	rc   io.ReadCloser
	left int64
}

var errTruncated = errors.New("faultproxy: body truncated")

func (t *truncated) Read(b []byte) (int, error) {
	if t.left <= 0 {
		return 0, errTruncated
	}
	if int64(len(b)) > t.left {
		b = b[:t.left]
	}
	n, err := t.rc.Read(b)
	t.left -= int64(n)
	return n, err
}

func (t *truncated) Close() error { return t.rc.Close() }

// flipper inverts the byte at offset at of rc.
type flipper struct {
	rc  io.ReadCloser
	at  int64
	off int64
}

func (f *flipper) Read(b []byte) (int, error) {
	n, err := f.rc.Read(b)
	if f.at >= f.off && f.at < f.off+int64(n) {
		b[f.at-f.off] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

func (f *flipper) Close() error { return f.rc.Close() }

// BlobGets matches GET requests for blobs (/v2/<repo>/blobs/<digest>).
func BlobGets(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

// BlobCommits matches the PUT that completes a blob upload
// (…/blobs/uploads/<id>?digest=…); key them with ByDigest, since every
// retried upload has a new path.
func BlobCommits(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.URL.Query().Get("digest") != ""
}

// ManifestPuts matches manifest uploads.
func ManifestPuts(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/")
}

// ByDigest keys a request by its digest query parameter, else its path.
func ByDigest(r *http.Request) string {
	if d := r.URL.Query().Get("digest"); d != "" {
		return d
	}
	return r.URL.Path
}

// All keys every request alike, so that a rule's schedule counts all the
// requests it matches together.
func All(*http.Request) string { return "" }

// Any matches every request.
func Any(*http.Request) bool { return true }

// String describes the proxy for test logs.
func (p *Proxy) String() string { return fmt.Sprintf("faultproxy %s", p.Addr) }

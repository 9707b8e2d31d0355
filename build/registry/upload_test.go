package registry

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestNextLocation checks where a registry may send an upload's body: a
// relative or same-host Location, or a public storage host; never another
// loopback, private or link-local address, nor another scheme.
func TestNextLocation(t *testing.T) {
	req := &http.Request{URL: &url.URL{Scheme: "http", Host: "127.0.0.1:5000", Path: "/v2/app/blobs/uploads/"}}
	tests := []struct {
		loc, want, err string
	}{
		{"/v2/app/blobs/uploads/u1?_state=x", "http://127.0.0.1:5000/v2/app/blobs/uploads/u1?_state=x", ""},
		{"http://127.0.0.1:5000/v2/app/blobs/uploads/u2", "http://127.0.0.1:5000/v2/app/blobs/uploads/u2", ""},
		{"https://storage.example.com/bucket/u3?sig=1", "https://storage.example.com/bucket/u3?sig=1", ""},
		{"http://169.254.169.254/latest/meta-data", "", "may not send the body"},
		{"http://10.0.0.7/upload", "", "may not send the body"},
		{"http://127.0.0.2:5000/upload", "", "may not send the body"},
		{"http://[::1]:80/upload", "", "may not send the body"},
		{"http://0.0.0.0/upload", "", "may not send the body"},
		{"file:///etc/passwd", "", "not HTTP"},
		{"", "", "without a Location"},
		{"http://%zz", "", "upload location"},
	}
	for _, tt := range tests {
		resp := &http.Response{Request: req, Header: http.Header{}}
		if tt.loc != "" {
			resp.Header.Set("Location", tt.loc)
		}
		got, err := nextLocation(resp)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %q, %v; want an error with %q", tt.loc, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.loc, got, err, tt.want)
		}
	}
}

// TestMultiWriteIndex pushes an index of two images and a plain image with
// the uploader: the registry then serves both with their digests, and the
// progress updates end at the total.
func TestMultiWriteIndex(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	idx, err := random.Index(8<<10, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(8<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	c := New(Options{})
	ri, _ := c.ParseReference(host + "/multi/index:1")
	rm, _ := c.ParseReference(host + "/multi/index:img")
	updates := make(chan v1.Update, 100)
	var last v1.Update
	done := make(chan struct{})
	go func() {
		defer close(done)
		for u := range updates {
			last = u
		}
	}()
	if err := c.MultiWrite(context.Background(), map[name.Reference]remote.Taggable{ri: idx, rm: img}, updates); err != nil {
		t.Fatal(err)
	}
	<-done
	for ref, want := range map[name.Reference]interface{ Digest() (v1.Hash, error) }{ri: idx, rm: img} {
		d, _ := want.Digest()
		got, err := remote.Get(ref)
		if err != nil || got.Digest != d {
			t.Errorf("%s: %v, %v; want %s", ref, got, err, d)
		}
	}
	got, err := remote.Index(ri)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(got); err != nil {
		t.Errorf("pushed index: %v", err)
	}
	if last.Total == 0 || last.Complete != last.Total {
		t.Errorf("last update %+v, want complete", last)
	}
}

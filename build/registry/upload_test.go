package registry

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
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

package registry

import (
	"strings"
	"testing"
)

func TestClientPlainHTTP(t *testing.T) {
	tests := []struct {
		registry string
		insecure []string
		want     bool
	}{
		{"127.0.0.1:5000", nil, true},
		{"127.0.0.2:5000", nil, true},
		{"127.255.0.9", nil, true},
		{"[::1]:5000", nil, true},
		{"localhost:5000", nil, true},
		{"localhost", nil, true},
		{"reg.localhost:80", nil, true},
		{"index.docker.io", nil, false},
		{"10.1.2.3:5000", nil, false},
		{"reg.example:5000", []string{"reg.example:5000"}, true},
		{"reg.example:5000", []string{"reg.example"}, true},
		{"reg.example:5000", []string{"reg.example:6000"}, false},
		{"localhostx:5000", nil, false},
	}
	for _, tt := range tests {
		if got := New(Options{Insecure: tt.insecure}).PlainHTTP(tt.registry); got != tt.want {
			t.Errorf("PlainHTTP(%q) with --insecure-registry %v = %v, want %v", tt.registry, tt.insecure, got, tt.want)
		}
	}
}

// TestPullSources lists the mirrors of the reference's registry in the
// configured order, each with the repository path under its prefix, then
// the registry itself; other registries have only themselves.
func TestPullSources(t *testing.T) {
	cfg, err := Parse(`[registry."docker.io"]
  mirrors = ["127.0.0.1:5000", "mirror.example/hub"]
`)
	if err != nil {
		t.Fatal(err)
	}
	c := New(Options{Config: cfg})
	r, err := c.ParseReference("busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range c.PullSources(r) {
		if s.Err != nil {
			t.Fatalf("source %s: %v", s.Mirror, s.Err)
		}
		got = append(got, s.Mirror+"="+s.Ref.Name()+" "+s.Ref.Context().Scheme())
	}
	want := []string{
		"127.0.0.1:5000=127.0.0.1:5000/library/busybox:1 http",
		"mirror.example/hub=mirror.example/hub/library/busybox:1 https",
		"=index.docker.io/library/busybox:1 https",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sources:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	r, _ = c.ParseReference("ghcr.io/o/app")
	if s := c.PullSources(r); len(s) != 1 || s[0].Mirror != "" || s[0].Ref != r {
		t.Errorf("sources of a registry without mirrors: %+v", s)
	}
}

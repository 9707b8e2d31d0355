package registry

import "testing"

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

package imageref

import (
	"strings"
	"testing"
)

var hex64 = strings.Repeat("ab", 32)

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"app", "docker.io/library/app:latest"},
		{"app:1.0", "docker.io/library/app:1.0"},
		{"docker.io/app", "docker.io/library/app:latest"},
		{"index.docker.io/library/app:2", "docker.io/library/app:2"},
		{"user/app", "docker.io/user/app:latest"},
		{"ghcr.io/o/app", "ghcr.io/o/app:latest"},
		{"localhost:5000/app:x", "localhost:5000/app:x"},
		{"127.0.0.1:5000/a/b/c", "127.0.0.1:5000/a/b/c:latest"},
		{"app@sha256:" + hex64, "docker.io/library/app@sha256:" + hex64},
		// name:tag@digest resolves by the digest, as in Docker.
		{"app:1.0@sha256:" + hex64, "docker.io/library/app@sha256:" + hex64},
		{"localhost:5000/a/b:x@sha256:" + hex64, "localhost:5000/a/b@sha256:" + hex64},
		{"app@sha256:abc", ""},
		{"app@md5:" + hex64, ""},
		{"UPPER", ""},
		{"app:", ""},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("Normalize(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

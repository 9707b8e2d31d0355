package build

import (
	"maps"
	"strings"
	"testing"
)

// TestCheckHostname checks which BUILDKIT_SANDBOX_HOSTNAME values are
// accepted: a value that could add a line or a name to /etc/hosts, or that
// the kernel would refuse, is an error naming the build arg.
func TestCheckHostname(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"", true},
		{"myhost", true},
		{"build-1.example_x", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"evil\n10.0.0.1 registry", false},
		{"two names", false},
		{"tab\there", false},
		{"ünïcode", false},
		{"a/b", false},
	} {
		err := checkHostname(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("checkHostname(%q) = %v, want ok %v", tt.in, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), sandboxHostnameArg) {
			t.Errorf("checkHostname(%q) = %v, does not name the build arg", tt.in, err)
		}
	}
}

// TestProxyEnv checks that a proxy build arg is visible under both
// spellings, that a spelling given on its own keeps its value, and that
// other build args are not proxies.
func TestProxyEnv(t *testing.T) {
	got := proxyEnv(map[string]string{"http_proxy": "h", "NO_PROXY": "N", "no_proxy": "n", "OTHER": "o"})
	want := map[string]string{"http_proxy": "h", "HTTP_PROXY": "h", "NO_PROXY": "N", "no_proxy": "n"}
	if !maps.Equal(got, want) {
		t.Errorf("proxyEnv = %v, want %v", got, want)
	}
}

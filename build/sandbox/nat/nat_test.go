package nat

import (
	"errors"
	"strings"
	"testing"
)

// TestResolvConf checks the resolv.conf of a private network: the tool's
// DNS forwarder instead of the host's nameservers, the host's search,
// domain and options lines kept.
func TestResolvConf(t *testing.T) {
	host := "# managed\nnameserver 127.0.0.53\nsearch example.org  corp\noptions edns0 trust-ad\ndomain example.org\n"
	tests := []struct {
		tool, want string
	}{
		{Pasta, "nameserver 169.254.1.1\nsearch example.org corp\noptions edns0 trust-ad\ndomain example.org\n"},
		{Slirp4netns, "nameserver 10.0.2.3\nsearch example.org corp\noptions edns0 trust-ad\ndomain example.org\n"},
	}
	for _, tt := range tests {
		if got := string(NAT{Tool: tt.tool}.ResolvConf([]byte(host))); got != tt.want {
			t.Errorf("%s: resolv.conf\n%s\nwant\n%s", tt.tool, got, tt.want)
		}
	}
}

// TestValid checks that a NAT needs a known tool and a path.
func TestValid(t *testing.T) {
	tests := []struct {
		nat  NAT
		want bool
	}{
		{NAT{Tool: Pasta, Path: "/usr/bin/pasta"}, true},
		{NAT{Tool: Slirp4netns, Path: "/usr/bin/slirp4netns"}, true},
		{NAT{Tool: Pasta}, false},
		{NAT{Tool: "vpnkit", Path: "/usr/bin/vpnkit"}, false},
		{NAT{}, false},
	}
	for _, tt := range tests {
		if got := tt.nat.Valid(); got != tt.want {
			t.Errorf("%+v.Valid() = %t, want %t", tt.nat, got, tt.want)
		}
	}
}

// TestFindUnknown checks that an unknown tool is refused by name, and is
// not reported as a missing NAT (which the build turns into a warning).
func TestFindUnknown(t *testing.T) {
	_, err := Find("vpnkit")
	if err == nil || !strings.Contains(err.Error(), `unknown NAT "vpnkit"`) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Find(vpnkit) = %v", err)
	}
}

package overlay

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLowerExistsIgnoresSymlinks checks that the differ reads the lower
// layers as overlayfs does, never through a layer's symlink: a base layer
// holding "link -> <host dir>" must not make "link/secret" exist because
// the host has it (the layer would then record a whiteout for it, telling
// the image which host paths exist).
func TestLowerExistsIgnoresSymlinks(t *testing.T) {
	tmp := t.TempDir()
	host := filepath.Join(tmp, "host")
	l0, l1 := filepath.Join(tmp, "l0"), filepath.Join(tmp, "l1")
	for _, d := range []string{host, l0, l1, filepath.Join(l0, "dir"), filepath.Join(l1, "real")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(host, "secret"), filepath.Join(l1, "real", "f")} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{
		filepath.Join(l0, "link"):   host,
		filepath.Join(l1, "dir"):    host,
		filepath.Join(l0, "rel"):    "../host",
		filepath.Join(l1, "nested"): "real",
	} {
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	d := &differ{lowers: []string{l0, l1}, xattr: "trusted.overlay."}
	tests := []struct {
		p    string
		dir  bool
		want bool
	}{
		{"link/secret", false, false},    // absolute symlink in the top lower
		{"rel/secret", false, false},     // relative one
		{"dir/secret", false, false},     // l0's directory over l1's symlink
		{"nested/f", false, false},       // a symlink inside the layers, not followed either
		{"real/f", false, true},          // a real file of a deeper layer
		{"real", true, true},             // a real directory
		{"link", false, true},            // the symlink itself exists
		{"link", true, false},            // but is not a directory
		{"missing/secret", false, false}, // nothing there
	}
	for _, tc := range tests {
		if got := d.lowerExists(tc.p, tc.dir); got != tc.want {
			t.Errorf("lowerExists(%q, dir=%v) = %v, want %v", tc.p, tc.dir, got, tc.want)
		}
	}
}

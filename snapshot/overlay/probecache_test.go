package overlay_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"builder/internal/testenv"
	"builder/snapshot/overlay"
)

// TestProbeCache opens a root, then reopens it after rewriting ProbeFile:
// an answer for this boot, file system and user namespace is taken as it
// is (the sentinel options come back, so no probe ran); a stale, foreign
// or malformed one makes the probe run again and replace it.
func TestProbeCache(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	sn, err := overlay.New(root)
	if err != nil {
		testenv.Skip(t, "overlayfs unavailable: %v", err)
	}
	probed := sn.Options()
	path := filepath.Join(root, overlay.ProbeFile)
	dt, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no %s after a successful probe: %v", overlay.ProbeFile, err)
	}
	var good map[string]any
	if err := json.Unmarshal(dt, &good); err != nil {
		t.Fatal(err)
	}
	sentinel := []any{"index=off"}
	edit := func(k string, v any) []byte {
		m := map[string]any{}
		for key, val := range good {
			m[key] = val
		}
		m["options"] = sentinel
		m[k] = v
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, c := range []struct {
		name   string
		file   []byte
		cached bool
	}{
		{"same boot, fs and namespace", edit("options", sentinel), true},
		{"other boot", edit("boot_id", "00000000-0000-0000-0000-000000000000"), false},
		{"other file system", edit("dev", 1), false},
		{"other user namespace", edit("user_ns", "user:[1]"), false},
		{"unknown xattr prefix", edit("xattr", "security."), false},
		{"not JSON", []byte("{"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(path, c.file, 0o600); err != nil {
				t.Fatal(err)
			}
			sn, err := overlay.New(root)
			if err != nil {
				t.Fatal(err)
			}
			want := probed
			if c.cached {
				want = []string{"index=off"}
			}
			if got := sn.Options(); !slices.Equal(got, want) {
				t.Errorf("options %q, want %q", got, want)
			}
			if !c.cached {
				if dt, _ := os.ReadFile(path); string(dt) == string(c.file) {
					t.Errorf("%s was not rewritten after the probe", overlay.ProbeFile)
				}
			}
		})
	}
}

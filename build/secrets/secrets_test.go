package secrets

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	wd, _ := os.Getwd()
	for _, tc := range []struct {
		spec, id string
		want     Source
		err      bool
	}{
		{"id=a,src=/x/y", "a", Source{File: "/x/y"}, false},
		{"id=a,source=rel", "a", Source{File: filepath.Join(wd, "rel")}, false},
		{"id=a,env=VAR", "a", Source{Env: "VAR"}, false},
		{"id=a,type=env,src=VAR", "a", Source{Env: "VAR"}, false},
		{"id=a", "a", Source{Env: "a"}, false},
		{"src=/x/file.txt", "file.txt", Source{File: "/x/file.txt"}, false},
		{"id=a,bogus=1", "", Source{}, true},
		{"id=a,type=ssh", "", Source{}, true},
		{"novalue", "", Source{}, true},
	} {
		id, s, err := Parse(tc.spec)
		if (err != nil) != tc.err || id != tc.id || s != tc.want {
			t.Errorf("Parse(%q) = %q, %+v, %v; want %q, %+v, error %v", tc.spec, id, s, err, tc.id, tc.want, tc.err)
		}
	}
}

func TestValue(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(small, []byte("v"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SECRETS_TEST_VAR", "from env")
	for _, tc := range []struct {
		name string
		src  Source
		want string
		ok   bool
		err  string
	}{
		{"file", Source{File: small}, "v", true, ""},
		{"missing file", Source{File: filepath.Join(dir, "none")}, "", false, ""},
		{"too large", Source{File: big}, "", false, "larger than"},
		{"env", Source{Env: "SECRETS_TEST_VAR"}, "from env", true, ""},
		{"missing env", Source{Env: "SECRETS_TEST_UNSET_VAR"}, "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			val, ok, err := tc.src.Value()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || ok != tc.ok || string(val) != tc.want {
				t.Errorf("Value() = %q, %v, %v; want %q, %v", val, ok, err, tc.want, tc.ok)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	mode := uint64(0o440)
	for _, tc := range []struct {
		name string
		mode *uint64
		want os.FileMode
	}{
		{"default", nil, 0o400},
		{"mode", &mode, 0o440},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := WriteFile(p, []byte("s"), tc.mode, nil, nil); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != tc.want {
				t.Errorf("mode %v, want %v", fi.Mode(), tc.want)
			}
			if err := WriteFile(p, []byte("s"), nil, nil, nil); err == nil {
				t.Errorf("WriteFile over an existing file succeeded")
			}
		})
	}
}

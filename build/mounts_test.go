package build

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"builder/build/secrets"
)

const testSecret = "s3cr3t-value"

// secretOption gives the build the secret "tok" from a file.
func secretOption(t *testing.T) func(*Options) {
	p := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(p, []byte(testSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(o *Options) { o.Secrets = map[string]secrets.Source{"tok": {File: p}} }
}

func TestRunMounts(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/mounts")
	withSecret := secretOption(t)
	res, log := f.mustBuild(dir, withSecret)
	u := unpack(t, res.Image)
	sum := sha256.Sum256([]byte(testSecret))
	for _, tc := range []struct{ path, want string }{
		{"from-stage", "artifact\n"},
		{"from-stage-ro", "ro\n"},
		{"from-context", "in context\n"},
		{"ctx-ignored", "hidden\n"},
		{"from-context-file", "in context\n"},
		{"rw-saw", "changed\n"},
		{"rw-after", "discarded\n"},
		{"cache-log", "run\n"},
		{"cache-owner", "1000:1000:750\n"},
		{"cache-private", "1000:1000:750\n"},
		{"tmpfs-base", "hidden\n"},
		{"tmpfs-size", "1024\n"},
		{"secret-sum", hex.EncodeToString(sum[:]) + "\n"},
		{"secret-mode", "0:0:400\n"},
		{"secret-custom-mode", "1000:1000:440\n"},
		{"secret-env", hex.EncodeToString(sum[:]) + "\n"},
		{"secret-env-file", "nofile\n"},
		{"secret-optional", "absent\n"},
		{"net-none", "lo\n"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := readFile(t, u.rootfs, tc.path); got != tc.want {
				t.Errorf("/%s = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
	// Mountpoints, mounted content and cache contents stay out of the image.
	for _, p := range []string{"in", "ctx", "w/f.txt", "cache", "cache2", "cache3", "run/secrets", "s", "out", "scratch/temp"} {
		if _, err := os.Lstat(filepath.Join(u.rootfs, p)); err == nil {
			t.Errorf("/%s is in the image", p)
		}
	}
	if got := readFile(t, u.rootfs, "scratch/base-file"); got != "base\n" {
		t.Errorf("/scratch/base-file = %q", got)
	}
	// The secret value is nowhere: not in a file, the config, history or
	// progress output, nor in a cache record.
	checkNoSecret(t, u.rootfs, "image rootfs")
	cfg, _ := json.Marshal(u.config)
	if bytes.Contains(cfg, []byte(testSecret)) {
		t.Errorf("secret in the image config")
	}
	if strings.Contains(log, testSecret) {
		t.Errorf("secret in the progress output")
	}
	checkNoSecret(t, filepath.Join(f.root, "cache"), "cache records")

	// A second build with another secret value is fully cached: secrets
	// are keyed by id only. With --no-cache the cache mount keeps the
	// first build's content.
	other := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(other, []byte("another"), 0o600)
	again, log := f.mustBuild(dir, func(o *Options) { o.Secrets = map[string]secrets.Source{"tok": {File: other}} })
	if again.Cached != again.Steps || again.ManifestDigest != res.ManifestDigest {
		t.Errorf("%d of %d steps cached with only the secret value changed:\n%s", again.Cached, again.Steps, log)
	}
	res, _ = f.mustBuild(dir, withSecret, func(o *Options) { o.NoCache = true })
	u = unpack(t, res.Image)
	if got := readFile(t, u.rootfs, "cache-log"); got != "run\nrun\n" {
		t.Errorf("cache mount did not persist: /cache-log = %q", got)
	}
}

// checkNoSecret fails if a file below dir holds testSecret.
func checkNoSecret(t *testing.T, dir, what string) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if dt, err := os.ReadFile(p); err == nil && bytes.Contains(dt, []byte(testSecret)) {
			t.Errorf("secret value found in %s: %s", what, p)
		}
		return nil
	})
}

func TestRunMountErrors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, dockerfile, want string
	}{
		{"ssh-required", "RUN --mount=type=ssh,required true", `^Dockerfile:3: RUN --mount=type=ssh,required true: .*id=default is required but no agent was given`},
		{"ssh-source", "RUN --mount=type=ssh,source=x true", `^Dockerfile:3: .*ssh does not support source`},
		{"required-secret", "RUN --mount=type=secret,id=nope,required true", `^Dockerfile:3: .*secret nope: not found`},
		{"missing-bind-source", "RUN --mount=source=nope,target=/x true", `^Dockerfile:3: .*nope`},
		{"insecure", "RUN --security=insecure true", `^Dockerfile:3: .*security.insecure`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "context"), 0o755)
			os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("ARG BASE\nFROM $BASE\n"+tc.dockerfile+"\n"), 0o644)
			_, log, err := f.build(dir)
			if err == nil {
				t.Fatalf("build succeeded:\n%s", log)
			}
			if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Errorf("error %q does not match %q", err, tc.want)
			}
		})
	}
}

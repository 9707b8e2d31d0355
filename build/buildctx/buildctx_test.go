package buildctx

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestDefaultDockerfile checks the Dockerfile picked without -f
// (BuildKit's testDockerfileLowercase): "Dockerfile", else "dockerfile".
func TestDefaultDockerfile(t *testing.T) {
	for _, tc := range []struct {
		files []string
		want  string
	}{
		{[]string{"Dockerfile"}, "Dockerfile"},
		{[]string{"dockerfile"}, "dockerfile"},
		{[]string{"Dockerfile", "dockerfile"}, "Dockerfile"},
	} {
		dir := t.TempDir()
		for _, f := range tc.files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("FROM scratch\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		c, err := Resolve(context.Background(), Spec{Context: dir})
		if err != nil {
			t.Fatalf("%v: %v", tc.files, err)
		}
		if got := filepath.Base(c.Dockerfile); got != tc.want {
			t.Errorf("%v: Dockerfile %s, want %s", tc.files, got, tc.want)
		}
		c.Close()
	}
}

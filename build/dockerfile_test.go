package build

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"builder/parser"
)

// TestReadDockerfile reads Dockerfiles the way the CLI does before Build:
// a file that parses, one that does not (its error names the file by its
// base name and the line), a directory and a missing file.
func TestReadDockerfile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("app.Dockerfile", "FROM scratch AS one\nFROM scratch\nCOPY --from=one / /\n")
	bad := write("bad.Dockerfile", "FROM scratch\nFROBNICATE x\n")
	sub := filepath.Join(dir, "dir.Dockerfile")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}

	g, err := ReadDockerfile(good)
	if err != nil || len(g.Stages) != 2 || g.Stages[1].Pos.File != "app.Dockerfile" {
		t.Fatalf("ReadDockerfile(%s) = %+v, %v", good, g, err)
	}
	var pe *parser.Error
	if _, err := ReadDockerfile(bad); !errors.As(err, &pe) || pe.Pos.String() != "bad.Dockerfile:2" {
		t.Errorf("ReadDockerfile(%s) = %v, want a parser.Error at bad.Dockerfile:2", bad, err)
	}
	if _, err := ReadDockerfile(sub); err == nil || errors.As(err, &pe) {
		t.Errorf("ReadDockerfile(%s) = %v, want a read error", sub, err)
	}
	if _, err := ReadDockerfile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing Dockerfile: %v, want fs.ErrNotExist", err)
	}
}

// TestDockerfilePath checks the default Dockerfile of a build.
func TestDockerfilePath(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "Dockerfile"},
		{Options{ContextDir: "ctx"}, "ctx/Dockerfile"},
		{Options{ContextDir: "ctx", Dockerfile: "other/Dockerfile.dev"}, "other/Dockerfile.dev"},
	} {
		if got := tc.o.DockerfilePath(); got != tc.want {
			t.Errorf("%+v: DockerfilePath() = %q, want %q", tc.o, got, tc.want)
		}
	}
}

package parser

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error is an *Error
// naming the file, and that a successful parse is well formed. The seed
// corpus is testdata/fuzz/FuzzParse plus every Dockerfile under testdata.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/dockerfiles/*/Dockerfile", "testdata/invalid/*/Dockerfile"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range files {
			dt, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(dt)
		}
	}
	f.Fuzz(func(t *testing.T, dt []byte) {
		g, err := Parse("Dockerfile", bytes.NewReader(dt))
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			if pe.Pos.File != "Dockerfile" || pe.Err == nil {
				t.Fatalf("bad error %#v", pe)
			}
			_ = pe.Error()
			return
		}
		if len(g.Stages) == 0 {
			t.Fatal("no stages and no error")
		}
		for i, s := range g.Stages {
			if s.Index != i || s.Pos.Line < 1 || s.Pos.EndLine < s.Pos.Line {
				t.Fatalf("bad stage %d: %+v", i, s)
			}
			for _, st := range s.Steps {
				if st.Op == nil || st.Pos.Line < s.Pos.Line || st.Pos.EndLine < st.Pos.Line {
					t.Fatalf("bad step %+v in stage %d", st, i)
				}
				switch op := st.Op.(type) {
				case *Onbuild:
					// A trigger may be rejected only later; it must not panic.
					if _, err := ParseOnbuild(op.Expression, st.Pos); err != nil {
						var pe *Error
						if !errors.As(err, &pe) {
							t.Fatalf("ParseOnbuild error %T is not *Error", err)
						}
					}
				case *Run:
					for _, m := range op.Mounts {
						_, _ = ParseMount(m.Spec, nil)
					}
				}
			}
		}
	})
}

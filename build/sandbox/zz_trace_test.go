package sandbox

import (
	"context"
	"os"
	"testing"
	"time"

	"builder/snapshot"
)

func TestZZTrace(t *testing.T) {
	lower := newRootfs(t)
	for i := 0; i < 3; i++ {
		upper, work := t.TempDir(), t.TempDir()
		s := time.Now()
		err := Run(context.Background(), Spec{
			Root: []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{
				"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work,
			}}},
			Args: []string{"/bin/true"}, Stderr: os.Stderr,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("total %v", time.Since(s))
	}
}

package overlay_test

import (
	"testing"

	"builder/internal/testenv"
	"builder/snapshot"
	"builder/snapshot/overlay"
	"builder/snapshot/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, func(t *testing.T, root string) snapshot.Snapshotter {
		sn, err := overlay.New(root)
		if err != nil {
			testenv.Skip(t, "overlayfs unavailable: %v", err)
		}
		return sn
	})
}

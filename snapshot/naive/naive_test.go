package naive_test

import (
	"testing"

	"builder/snapshot"
	"builder/snapshot/naive"
	"builder/snapshot/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, func(t *testing.T, root string) snapshot.Snapshotter {
		sn, err := naive.New(root)
		if err != nil {
			t.Fatal(err)
		}
		return sn
	})
}

package build

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"builder/build/buildtest"
)

// TestDiskFull builds on a store on a small tmpfs where a RUN writes
// incompressible data that fits the file system once but not twice: the
// step's change is snapshotted, then writing its layer runs out of space.
// The build must fail with an error naming the step and ENOSPC, leave no
// temporary blob in ingest/, and leave a store that checks clean and
// builds again once there is room.
func TestDiskFull(t *testing.T) {
	buildtest.RequireRoot(t)
	root := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=40m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount tmpfs: %v", err)
		}
		if m := buildtest.Mounts(t, root); len(m) > 0 {
			t.Errorf("mounts left behind:\n%s", strings.Join(m, "\n"))
		}
	})
	f := &fixture{t: t, root: root, base: buildtest.BusyboxRegistry(t)}
	f.b = f.open()
	dir := copyCase(t, "builds/diskfull")

	_, log, err := f.build(dir)
	if err == nil {
		t.Fatalf("build on a full disk succeeded\n%s", log)
	}
	var se *StepError
	if !errors.As(err, &se) || !strings.Contains(se.Step.Instruction, "head -c") {
		t.Errorf("error does not name the RUN that filled the disk: %v", err)
	}
	if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("error does not say the disk is full: %v", err)
	}
	t.Logf("error: %v", err)
	if left := storeFiles(t, root, "ingest"); len(left) > 0 {
		t.Errorf("ingest files left: %v", left)
	}
	if left := storeFiles(t, root, "snapshots/active"); len(left) > 0 {
		t.Errorf("active snapshots left: %v", left)
	}
	checkStore(t, root)
	if m := buildtest.Mounts(t, root); len(m) != 1 {
		t.Errorf("want only the tmpfs mounted at the store, got:\n%s", strings.Join(m, "\n"))
	}

	// With room again, the same store builds it, reusing the first RUN.
	if err := unix.Mount("", root, "", unix.MS_REMOUNT, "size=160m"); err != nil {
		t.Fatalf("grow tmpfs: %v", err)
	}
	f.b = f.open()
	res, log := f.mustBuild(dir)
	if res.Cached < 1 {
		t.Errorf("rebuild reused no step:\n%s", log)
	}
	checkStore(t, root)
}

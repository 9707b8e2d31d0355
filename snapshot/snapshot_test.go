package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"builder/internal/testenv"
	"builder/snapshot"
	"builder/snapshot/internal/treetest"
	"builder/snapshot/testsuite"
)

func needRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
}

func open(t *testing.T, name string) snapshot.Snapshotter {
	t.Helper()
	root := t.TempDir()
	sn, got, err := snapshot.Open(root, name)
	if err != nil {
		if name == snapshot.Overlay {
			testenv.Skip(t, "overlay unavailable: %v", err)
		}
		t.Fatal(err)
	}
	if got != name {
		t.Fatalf("Open(%q) chose %q", name, got)
	}
	t.Cleanup(func() { testsuite.CheckNoMounts(t, root) })
	return sn
}

// TestImplementationsAgree runs every case on both snapshotters: the same
// change must give the same tar bytes (or, where the forms may differ, the
// same tree), and every tar must be a valid layer.
func TestImplementationsAgree(t *testing.T) {
	needRoot(t)
	ov, nv := open(t, snapshot.Overlay), open(t, snapshot.Naive)
	for _, c := range testsuite.Cases {
		t.Run(strings.ReplaceAll(c.Name, " ", "_"), func(t *testing.T) {
			a := testsuite.RunCase(t, ov, c)
			b := testsuite.RunCase(t, nv, c)
			if d := treetest.Compare(a.Tree, b.Tree); d != "" {
				t.Fatalf("the change gave different trees:\n%s", d)
			}
			if c.SameBytes && !bytes.Equal(a.Tar, b.Tar) {
				t.Errorf("overlay and naive tars differ (%d vs %d bytes)", len(a.Tar), len(b.Tar))
			}
			for _, tb := range [][]byte{a.Tar, b.Tar} {
				l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
					return io.NopCloser(bytes.NewReader(tb)), nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := validate.Layer(l); err != nil {
					t.Errorf("invalid layer: %v", err)
				}
			}
		})
	}
}

func TestOpenChoosesAndRemembers(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	_, name, err := snapshot.Open(root, "")
	if err != nil {
		t.Fatal(err)
	}
	if name != snapshot.Overlay && name != snapshot.Naive {
		t.Fatalf("auto chose %q", name)
	}
	other := snapshot.Naive
	if name == snapshot.Naive {
		other = snapshot.Overlay
	}
	if _, _, err := snapshot.Open(root, other); err == nil {
		t.Errorf("Open with %s on a %s root succeeded", other, name)
	}
	if _, again, err := snapshot.Open(root, ""); err != nil || again != name {
		t.Errorf("reopen chose %q, %v; want %q", again, err, name)
	}
	root2 := t.TempDir()
	if _, n, err := snapshot.Open(root2, snapshot.Naive); err != nil || n != snapshot.Naive {
		t.Fatalf("Open naive: %q %v", n, err)
	}
	if _, n, err := snapshot.Open(root2, ""); err != nil || n != snapshot.Naive {
		t.Errorf("auto on a naive root chose %q, %v", n, err)
	}
	if _, _, err := snapshot.Open(t.TempDir(), "zfs"); err == nil {
		t.Error("unknown snapshotter accepted")
	}
}

// TestDeadOwnerCleanup: an active snapshot of a live process survives
// another process's Open; once its owner is SIGKILLed, Open removes it.
func TestDeadOwnerCleanup(t *testing.T) {
	needRoot(t)
	if root := os.Getenv("SNAPSHOT_TEST_HELPER"); root != "" {
		sn, _, err := snapshot.Open(root, os.Getenv("SNAPSHOT_TEST_KIND"))
		if err == nil {
			_, err = sn.Prepare(context.Background(), "held", "")
		}
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ready")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	for _, kind := range []string{snapshot.Overlay, snapshot.Naive} {
		t.Run(kind, func(t *testing.T) {
			root := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestDeadOwnerCleanup$")
			cmd.Env = append(os.Environ(), "SNAPSHOT_TEST_HELPER="+root, "SNAPSHOT_TEST_KIND="+kind)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()         //nolint:errcheck
			defer cmd.Process.Kill() //nolint:errcheck
			buf := make([]byte, 64)
			n, _ := out.Read(buf)
			if got := strings.TrimSpace(string(buf[:n])); got != "ready" {
				if strings.Contains(got, "overlay") {
					testenv.Skip(t, "%s", got)
				}
				t.Fatalf("helper: %q", got)
			}
			active := func() int {
				ents, err := os.ReadDir(filepath.Join(root, "active"))
				if err != nil {
					t.Fatal(err)
				}
				return len(ents)
			}
			sn, _, err := snapshot.Open(root, kind)
			if err != nil {
				t.Fatal(err)
			}
			if active() != 2 { // the directory and its lock
				t.Fatalf("Open removed a live process's snapshot")
			}
			if _, err := sn.Prepare(context.Background(), "held", ""); !errors.Is(err, snapshot.ErrExists) {
				t.Errorf("Prepare of a key held by another process: %v", err)
			}
			if err := sn.Remove(context.Background(), "held"); err == nil {
				t.Error("Remove of a key held by another process succeeded")
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if _, _, err := snapshot.Open(root, kind); err != nil {
				t.Fatal(err)
			}
			if n := active(); n != 0 {
				t.Errorf("%d leftovers of a killed process", n)
			}
			if _, err := sn.Prepare(context.Background(), "held", ""); err != nil {
				t.Errorf("Prepare after cleanup: %v", err)
			}
			if err := sn.Remove(context.Background(), "held"); err != nil {
				t.Error(err)
			}
		})
	}
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("read") }

func TestUnpack(t *testing.T) {
	needRoot(t)
	for _, kind := range []string{snapshot.Overlay, snapshot.Naive} {
		t.Run(kind, func(t *testing.T) {
			src, dst := open(t, kind), open(t, kind)
			ctx := context.Background()
			testsuite.Base(t, src)
			// Rebuild "base", then a case on top of it, in dst from tars.
			var baseTar bytes.Buffer
			mounts, err := src.Prepare(ctx, "all", "")
			if err != nil {
				t.Fatal(err)
			}
			view, err := src.View(ctx, "base")
			if err != nil {
				t.Fatal(err)
			}
			err = snapshot.WithMounts(ctx, [][]snapshot.Mount{mounts, view}, func(r []string) error {
				return exec.Command("cp", "-a", r[1]+"/.", r[0]).Run()
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Diff(ctx, &baseTar, "all", snapshot.DiffOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := src.Remove(ctx, "all"); err != nil {
				t.Fatal(err)
			}
			top := testsuite.RunCase(t, src, testsuite.Cases[7]) // recreate dir

			if err := snapshot.Unpack(ctx, dst, "l1", "", &baseTar); err != nil {
				t.Fatal(err)
			}
			if err := snapshot.Unpack(ctx, dst, "l1", "", failReader{}); err != nil {
				t.Errorf("Unpack of an existing name read its layer: %v", err)
			}
			if err := snapshot.Unpack(ctx, dst, "l2", "l1", bytes.NewReader(top.Tar)); err != nil {
				t.Fatal(err)
			}
			view, err = dst.View(ctx, "l2")
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]string
			err = snapshot.WithMounts(ctx, [][]snapshot.Mount{view}, func(r []string) error {
				got, err = treetest.Dump(r[0])
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if d := treetest.Compare(top.Tree, got); d != "" {
				t.Errorf("unpacked chain differs:\n%s", d)
			}
			hostile, err := os.Open("archive/testdata/dotdot.tar")
			if err != nil {
				t.Fatal(err)
			}
			defer hostile.Close()
			if err := snapshot.Unpack(ctx, dst, "bad", "l1", hostile); err == nil {
				t.Error("hostile layer unpacked")
			}
			if dst.Exists(ctx, "bad") {
				t.Error("failed Unpack left a snapshot")
			}
		})
	}
}

package overlay

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"builder/internal/testenv"
	"builder/snapshot/internal/store"
	"builder/snapshot/mount"
)

func newSnapshotter(t *testing.T) *Snapshotter {
	t.Helper()
	testenv.RequireRoot(t)
	s, err := New(t.TempDir())
	if err != nil {
		testenv.Skip(t, "overlayfs unavailable: %v", err)
	}
	return s
}

// layer commits name on parent after running change in the mounted tree.
func layer(t *testing.T, s *Snapshotter, name, parent string, change func(root string) error) {
	t.Helper()
	ctx := context.Background()
	m, err := s.Prepare(ctx, name+"-key", parent)
	if err != nil {
		t.Fatal(err)
	}
	if err := mount.WithMounts(ctx, "", [][]mount.Mount{m}, func(r []string) error { return change(r[0]) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, name, name+"-key"); err != nil {
		t.Fatal(err)
	}
}

func names(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

func TestStableOptionsAccepted(t *testing.T) {
	s := newSnapshotter(t)
	if !slices.Equal(s.Options(), stableOptions) {
		t.Fatalf("kernel refused %v; got %v", stableOptions, s.Options())
	}
	layer(t, s, "base", "", func(r string) error { return os.WriteFile(filepath.Join(r, "f"), nil, 0o644) })
	m, err := s.Prepare(context.Background(), "k", "base")
	if err != nil {
		t.Fatal(err)
	}
	err = mount.WithMounts(context.Background(), "", [][]mount.Mount{m}, func(r []string) error {
		b, err := os.ReadFile("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			// The kernel lists only non-default options, so the stable ones
			// may not show; the mount itself proves it took them.
			if strings.Contains(l, r[0]) && strings.Contains(l, " overlay ") && strings.Contains(l, "upperdir=") {
				return nil
			}
		}
		return fmt.Errorf("mount not found")
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpperOddities writes straight into an upper directory what overlay
// or a user may leave there and checks how Diff treats it.
func TestUpperOddities(t *testing.T) {
	s := newSnapshotter(t)
	ctx := context.Background()
	layer(t, s, "base", "", func(r string) error {
		if err := os.MkdirAll(filepath.Join(r, "d/e"), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(r, "f"), nil, 0o644)
	})
	// A second layer hides d/e with an opaque d.
	layer(t, s, "mid", "base", func(r string) error {
		if err := os.RemoveAll(filepath.Join(r, "d")); err != nil {
			return err
		}
		return os.Mkdir(filepath.Join(r, "d"), 0o755)
	})
	tests := []struct {
		name    string
		upper   func(u string) error
		want    []string
		wantErr string
	}{
		{"whiteout of a missing path is dropped", func(u string) error {
			return unix.Mknod(filepath.Join(u, "nothere"), unix.S_IFCHR, 0)
		}, nil, ""},
		{"whiteout of a lower file is kept", func(u string) error {
			return unix.Mknod(filepath.Join(u, "f"), unix.S_IFCHR, 0)
		}, []string{".wh.f"}, ""},
		{"whiteout below an opaque lower dir is dropped", func(u string) error {
			if err := os.Mkdir(filepath.Join(u, "d"), 0o755); err != nil {
				return err
			}
			return unix.Mknod(filepath.Join(u, "d/e"), unix.S_IFCHR, 0)
		}, []string{"d/"}, ""},
		{"opaque dir without a lower dir is plain", func(u string) error {
			if err := os.Mkdir(filepath.Join(u, "new"), 0o755); err != nil {
				return err
			}
			return unix.Setxattr(filepath.Join(u, "new"), "trusted.overlay.opaque", []byte("y"), 0)
		}, []string{"new/"}, ""},
		{"redirect is refused", func(u string) error {
			if err := os.Mkdir(filepath.Join(u, "r"), 0o755); err != nil {
				return err
			}
			return unix.Setxattr(filepath.Join(u, "r"), "trusted.overlay.redirect", []byte("/d"), 0)
		}, nil, "redirect"},
		{"a real .wh. file is refused", func(u string) error {
			return os.WriteFile(filepath.Join(u, ".wh.x"), nil, 0o644)
		}, nil, "whiteout"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := fmt.Sprintf("odd-%d", i)
			if _, err := s.Prepare(ctx, key, "mid"); err != nil {
				t.Fatal(err)
			}
			defer s.Remove(ctx, key) //nolint:errcheck
			dir, _, err := s.st.Active(key)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.upper(filepath.Join(dir, "fs")); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			err = s.Diff(ctx, &buf, key, store.DiffOptions{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := names(t, buf.Bytes()); !slices.Equal(got, tc.want) {
				t.Errorf("entries %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDeepChain stacks enough layers that absolute lowerdir options would
// pass a page, which the mount code shortens with relative paths.
func TestDeepChain(t *testing.T) {
	s := newSnapshotter(t)
	parent := ""
	const depth = 90
	for i := range depth {
		name := fmt.Sprintf("layer-%d", i)
		layer(t, s, name, parent, func(r string) error {
			return os.WriteFile(filepath.Join(r, fmt.Sprintf("f%02d", i)), nil, 0o644)
		})
		parent = name
	}
	m, err := s.View(context.Background(), parent)
	if err != nil {
		t.Fatal(err)
	}
	err = mount.WithMounts(context.Background(), "", [][]mount.Mount{m}, func(r []string) error {
		ents, err := os.ReadDir(r[0])
		if err != nil {
			return err
		}
		if len(ents) != depth {
			return fmt.Errorf("view shows %d files, want %d", len(ents), depth)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package export

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"builder/snapshot/archive"
	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// UnpackRootfs writes the root filesystem of img into dir, creating dir if
// needed: every layer in order, applied with archive.Apply, so whiteouts
// delete what lower layers (or dir itself) hold and nothing is written
// outside dir. Layers are streamed. On error dir holds a partial tree.
// Ownership, devices and some xattrs need root. Unpacking the same image
// into the same directory again gives the same tree.
func UnpackRootfs(ctx context.Context, dir string, img v1.Image) error {
	if err := unpackRootfs(ctx, dir, img); err != nil {
		return fmt.Errorf("unpack rootfs: %w", err)
	}
	return nil
}

func unpackRootfs(ctx context.Context, dir string, img v1.Image) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("layers: %w", err)
	}
	for _, l := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, _ := l.Digest()
		rc, err := l.Uncompressed()
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		_, err = archive.Apply(dir, content.ContextReader(ctx, rc))
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
	}
	return nil
}

// WriteRootfsTar writes the root filesystem of img to w as one tar, the
// way `docker export` flattens a container: the layers are unpacked with
// UnpackRootfs into a fresh directory under scratch (which must exist and
// should be on a local file system with room for the tree), then archived
// with archive.Writer: parents before children, names sorted, hard links
// kept, headers normalized. The scratch directory is removed on every path,
// cancellation included.
func WriteRootfsTar(ctx context.Context, w io.Writer, img v1.Image, scratch string) error {
	return writeTreeTar(ctx, w, scratch, func(dir string) error { return unpackRootfs(ctx, dir, img) })
}

// WritePlatformsRootfsTar writes the root filesystems of a multi-platform
// build to w as one tar, each under its platform's directory (PlatformDir:
// linux_amd64/, linux_arm64/), as BuildKit's tar exporter does, and as
// WriteRootfsTar writes one.
func WritePlatformsRootfsTar(ctx context.Context, w io.Writer, images []PlatformImage, scratch string) error {
	return writeTreeTar(ctx, w, scratch, func(dir string) error {
		for _, pi := range images {
			if err := unpackRootfs(ctx, filepath.Join(dir, PlatformDir(pi.Platform)), pi.Image); err != nil {
				return fmt.Errorf("%s: %w", PlatformString(pi.Platform), err)
			}
		}
		return nil
	})
}

// writeTreeTar lets fill write a tree into a fresh directory under
// scratch and archives it to w; the directory is removed on every path.
func writeTreeTar(ctx context.Context, w io.Writer, scratch string, fill func(dir string) error) (err error) {
	dir, err := os.MkdirTemp(scratch, "rootfs-")
	if err != nil {
		return fmt.Errorf("write rootfs tar: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("write rootfs tar: remove scratch: %w", rerr)
		}
	}()
	if err := fill(dir); err != nil {
		return fmt.Errorf("write rootfs tar: %w", err)
	}
	if err := archive.WriteTree(ctx, content.ContextWriter(ctx, w), dir); err != nil {
		return fmt.Errorf("write rootfs tar: %w", err)
	}
	return nil
}

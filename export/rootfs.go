package export

import (
	"context"
	"errors"
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
// outside dir. Layers are streamed. Every layer blob is verified against
// its digest (VerifyLayers) before anything is written, so a corrupt blob
// leaves dir untouched; on any other error dir holds a partial tree.
// Ownership, devices and some xattrs need root. Unpacking the same image
// into the same directory again gives the same tree.
func UnpackRootfs(ctx context.Context, dir string, img v1.Image) error {
	if err := VerifyLayers(ctx, img); err != nil {
		return fmt.Errorf("unpack rootfs: %w", err)
	}
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
		// Decompressed here rather than by l.Uncompressed, whose codec
		// would report a checksum error where the verifying reader of
		// the compressed blob has the cause.
		crc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		rc, err := Decompress(crc)
		if err != nil {
			crc.Close()
			return fmt.Errorf("layer %s: %w", d, err)
		}
		_, err = archive.Apply(dir, content.ContextReader(ctx, rc))
		if err == nil {
			// Read what follows the tar's end so that a verifying
			// reader sees the whole blob.
			_, err = io.Copy(io.Discard, content.ContextReader(ctx, rc))
		}
		rc.Close()
		if err != nil {
			// A corrupt blob often breaks decompression or the tar
			// before its end is read, or the verdict came with bytes
			// that decoded to garbage: the verdict is the error that
			// matters.
			if serr := sourceError(rc); errors.Is(serr, content.ErrCorrupt) {
				err = serr
			} else if verr := verifyLayer(ctx, l, nil); errors.Is(verr, content.ErrCorrupt) {
				err = verr
			}
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

// VerifyLayers reads every layer blob of img once, so that layers backed by
// the store (NewLayer) check their bytes against their digests, and
// returns the first failure, a *content.CorruptError for a corrupt blob.
// It writes nothing; it is the pass an output that cannot be undone (a
// directory) makes before it starts.
func VerifyLayers(ctx context.Context, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("layers: %w", err)
	}
	buf := make([]byte, 256<<10)
	for _, l := range layers {
		if err := verifyLayer(ctx, l, buf); err != nil {
			d, _ := l.Digest()
			return fmt.Errorf("layer %s: %w", d, err)
		}
	}
	return nil
}

// verifyLayer reads l's compressed bytes once, with buf if not nil.
func verifyLayer(ctx context.Context, l v1.Layer, buf []byte) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.CopyBuffer(io.Discard, content.ContextReader(ctx, rc), buf)
	return err
}

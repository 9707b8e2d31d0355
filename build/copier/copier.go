// Package copier carries out the file side of the Dockerfile COPY and ADD
// instructions for local sources, the way `docker buildx build` does, and
// computes the content checksum that the build cache keys a COPY on.
//
// The caller (the build executor) mounts the destination snapshot at a host
// directory and passes a source root: the build context directory, or the
// read-only root of another stage or image. Copy never mounts anything and
// never expands variables.
//
// Every path is confined. Source paths are resolved as if the source root
// were "/": a symlink named as a source is followed but cannot leave the
// root, a path with ".." that climbs above the root is refused, and symlinks
// inside copied directories are copied as symlinks, never followed. Writes
// resolve the destination inside the destination root the same way (an
// image's /usr/lib -> /lib link is followed inside the root), and below that
// every file is created through directory handles with O_NOFOLLOW, so a
// symlink in the destination can never redirect a write outside it.
//
// Behaviour that follows BuildKit (fsutil's copy and the Dockerfile
// frontend) rather than the classic builder:
//   - Directories that Copy creates for the destination (missing parents,
//     or the destination directory of a directory source) are owned by the
//     --chown user (root otherwise) and get mode 0755, or the --chmod mode
//     when it is octal. Directories that already exist keep their owner and
//     mode; only the copied entries below them get the source metadata.
//   - A wildcard that matches nothing is not an error as long as the
//     request as a whole selects something. A named path that does not
//     exist always is.
//   - Several sources need a destination ending in "/" unless all of them
//     are directories, whose contents are then merged into the destination.
//   - Inside a copied directory, an entry meets what the destination holds
//     under the same name: a directory merges into a directory (taking the
//     source's owner, mode and times), a non-directory replaces a
//     non-directory (a symlink there is removed, never written through),
//     and anything else is an error ("cannot copy to non-directory", e.g.
//     a rootfs/usr directory over an image's usr -> /usr symlink).
//   - A .dockerignore'd path is invisible; a COPY that names only ignored
//     paths fails as not found.
//   - ADD extracts a local file when its content is a tar archive, plain or
//     compressed with gzip, bzip2, xz or zstd; the name does not matter.
//     The archive always lands in the destination as a directory.
package copier

import (
	"context"
	"fmt"
	"io"

	"github.com/moby/patternmatcher"
)

// Source is the tree that a COPY reads from.
type Source struct {
	// Root is the host directory that source paths are relative to.
	Root string
	// Ignore hides paths from the copy (the build context's .dockerignore).
	// Nil hides nothing. Patterns match paths relative to Root.
	Ignore *patternmatcher.PatternMatcher
	// IsContext marks the build context: copied files get uid/gid 0:0
	// unless the request has Chown. For stage and image sources ownership
	// is kept.
	IsContext bool
	// Hashes, if not nil, is the StatCache of Root that Checksum consults
	// and fills. Copy does not use it.
	Hashes *StatCache
}

// Owner is a resolved numeric owner.
type Owner struct{ UID, GID int }

// Request is one COPY or ADD instruction with its variables expanded.
type Request struct {
	// Sources are the source paths as written, relative to Source.Root; a
	// leading "/" or "./" means the root. They may hold wildcards (Go
	// filepath.Match syntax per path segment).
	Sources []string
	// Dest is the absolute destination path in the container; a relative
	// destination must already be joined with WORKDIR. A trailing "/" makes
	// it a directory.
	Dest string
	// Chown owns every copied entry and every directory Copy creates, nil
	// to keep the default (0:0 for the build context, the source's owner
	// otherwise).
	Chown *Owner
	// Chmod is an octal ("755") or symbolic ("u+x,g-w") mode applied to
	// every copied file and directory; "" keeps the source modes.
	Chmod string
	// Excludes are COPY --exclude patterns, matched against paths relative
	// to each copied source.
	Excludes []string
	// Parents is COPY --parents: the source path below the root (or below
	// a "/./" pivot in it) is recreated under Dest.
	Parents bool
	// Add makes local archives extract into Dest instead of being copied.
	Add bool
	// Extract unpacks an uncompressed tar stream into the host directory
	// dstDir, which lies inside the destination root with its symlinks
	// already resolved. It must itself confine the entries to dstDir.
	// Required when Add is set and a source is an archive. Copy has already
	// decompressed the stream and, with Chown, rewritten every header's
	// uid and gid.
	Extract func(dstDir string, tar io.Reader) error
	// Epoch is reserved for SOURCE_DATE_EPOCH handling; Copy ignores it,
	// Checksum includes it.
	Epoch *int64
}

// Copy copies the sources of req from src into the tree at the host
// directory dstRoot (the mounted destination snapshot), following Docker's
// COPY/ADD rules. It returns an error naming the source when a source is
// missing, ignored or escapes the root.
//
// Copy is not atomic: on error, dstRoot may hold part of the copy, and the
// caller is expected to discard the snapshot. Running it twice with the
// same arguments gives the same tree. Cancelling ctx stops it between
// files.
func Copy(ctx context.Context, src Source, dstRoot string, req Request) error {
	mode, sr, sel, err := openSources(ctx, src, req)
	if err != nil {
		return err
	}
	defer sr.close()
	dr, err := openRoot(dstRoot)
	if err != nil {
		return fmt.Errorf("open destination root: %w", err)
	}
	defer dr.close()
	w := &writer{src: src, req: req, mode: mode, srcR: sr, dst: dr, links: map[string]string{}}
	return w.run(ctx, sel)
}

// openSources parses req's --chmod, opens the source root and selects
// req's sources in it: what Copy and WriteLayer both start with. The
// caller closes the root.
func openSources(ctx context.Context, src Source, req Request) (*chmod, *root, *selection, error) {
	mode, err := parseChmod(req.Chmod)
	if err != nil {
		return nil, nil, nil, err
	}
	sr, err := openRoot(src.Root)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open source root: %w", err)
	}
	sel, err := selectSources(ctx, sr, src, req)
	if err != nil {
		sr.close()
		return nil, nil, nil, err
	}
	return mode, sr, sel, nil
}

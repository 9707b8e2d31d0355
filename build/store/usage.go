package store

import (
	"context"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Usage is what `builder du` shows: bytes and counts by kind.
type Usage struct {
	ImageBlobs        int64 // blobs reachable from tagged images
	CacheBlobs        int64 // blobs only cache records reach
	UnreferencedBlobs int64 // blobs nothing references (prune removes them)
	Snapshots         int64 // unpacked layer trees
	CacheMounts       int64 // RUN --mount=type=cache directories
	Images, Records   int
	Blobs, Snaps      int
	Mounts            int
}

// Total is the sum of all bytes in u.
func (u Usage) Total() int64 {
	return u.ImageBlobs + u.CacheBlobs + u.UnreferencedBlobs + u.Snapshots + u.CacheMounts
}

// DiskUsage measures the store. It takes the shared store lock and only
// reads.
func (s *Store) DiskUsage(ctx context.Context) (Usage, error) {
	unlock, err := s.lock(ctx, false)
	if err != nil {
		return Usage{}, err
	}
	defer unlock()
	var u Usage
	g, err := s.scan(ctx, nil)
	if err != nil {
		return u, err
	}
	u.Images, u.Records = g.images, len(g.records)
	for d, size := range g.blobs {
		u.Blobs++
		switch {
		case g.pinned[d]:
			u.ImageBlobs += size
		case g.refs[d] > 0:
			u.CacheBlobs += size
		default:
			u.UnreferencedBlobs += size
		}
	}
	for _, in := range g.snaps {
		u.Snaps++
		u.Snapshots += dirSize(in.Dir)
	}
	for _, m := range g.mounts {
		u.Mounts++
		u.CacheMounts += m.size
	}
	return u, nil
}

// dirSize is the apparent size of the files below dir, each hard-linked
// inode counted once; unreadable parts count as nothing.
func dirSize(dir string) int64 {
	var n int64
	seen := map[[2]uint64]bool{}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			id := [2]uint64{st.Dev, st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		n += st.Size
		return nil
	})
	return n
}

package store

import "time"

// BlobWalks is how many times AutoGC has walked blobs/sha256.
func BlobWalks() int64 { return blobWalks.Load() }

// SetSettle sets how old the blob directory's change time must be for a
// walk's sum to be kept, and returns the function that restores it.
func SetSettle(d time.Duration) (restore func()) {
	old := settle
	settle = d
	return func() { settle = old }
}

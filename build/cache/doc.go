// Package cache is builder's step cache: the key of a step (a sha256 of a
// versioned, structured preimage), the Record a step leaves, the local
// record store (Cache), and what the store keeps to explain a cache miss
// (--explain-cache). The same Record type is written to the local store
// and, through package cacheio, to exported caches.
//
// Package cache decides nothing about a build: package build derives the
// preimages, looks records up, and asks Explain why a step missed.
//
// # Keys
//
// A Key is the hex sha256 of the JSON of a Preimage whose V is
// "builder.step.v1". The version changes whenever the meaning of a key
// changes, so an old record is never served for a new meaning.
//
// # On-disk format (below the store's cache/ directory)
//
//	<key>.json          one Record, without its key (the file name is the key)
//	sums/<memo key>     a remembered COPY source checksum, "sha256:<hex>"
//	steps/<step id>.json  the last build of one Dockerfile step (Step)
//	files/<hex>.json    the file list of a COPY source checksum, path → summary
//	redact.key          32 random bytes: the HMAC key of Redact, mode 0600
//
// Every file is written atomically (temporary file, fsync, rename) and mode
// 0600. A record is written after the blobs and snapshots it names, so a
// record that exists names stored data; its mtime is its last use, which
// GC goes by. A damaged record or checksum reads as a miss.
//
// A record file is the JSON of Record with the key left out. Fields whose
// value is zero are left out too, except created and, before this package
// held the one Record type, size and mediaType (older stores write
// "size":0,"mediaType":"" for an empty record; both forms read the same).
// The exported format (package cacheio) writes the same JSON with the key.
package cache

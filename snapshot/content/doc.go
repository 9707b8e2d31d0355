// Package content is the content-addressed blob store: every blob (layer,
// config, manifest) lives once at blobs/sha256/<hex> below the store root,
// the layout of an OCI image layout, so the store root is also readable as
// one. Blobs are written to a temporary file under ingest/, hashed while they
// are written, fsynced and renamed into place: a blob path either does not
// exist or holds exactly the bytes its name promises.
//
// # On-disk format, version 1
//
// The store root (the builder --root directory) is mode 0700: its blobs,
// configs and records may hold build-arg values, so only its owner may
// enter it. Open makes a new root 0700 and tightens an existing one that
// others may enter (see Store.Tightened). As far as this package is
// concerned, the root holds:
//
//	content-version      "1\n": the version of this format. Open refuses a
//	                     root whose file names another version.
//	oci-layout           {"imageLayoutVersion":"1.0.0"}, so that the root is
//	                     an OCI image layout once an index.json is added
//	                     (package export maintains index.json).
//	blobs/sha256/<hex>   one immutable blob whose sha256 is <hex> (64 lower-
//	                     case hex digits), mode 0600. No other algorithm is
//	                     stored. A blob is never modified in place; it is
//	                     only created (rename) or deleted (Delete).
//	members/sha256/<hex> the sidecar of gzip layer blob <hex>: JSON
//	                     {"v":1,"compressor":…,"size":…,"members":[[offset,
//	                     compressed length, uncompressed length, CRC-32 of
//	                     the uncompressed bytes],…]} listing the blob's gzip
//	                     members (see
//	                     sidecar.go). A hint that saves compression work: it
//	                     is written after its blob, renamed into place but
//	                     not synced, removed with its blob (Delete), and a
//	                     missing, partial or wrong one only means that a
//	                     later layer compresses everything afresh. It is
//	                     written in ingest/ like a blob, so a writer that
//	                     dies leaves nothing in members/.
//	ingest/<random>      a blob being written. Its writer holds an exclusive
//	                     flock(2) on the file for as long as it is open; a
//	                     file in ingest/ whose lock can be taken belongs to
//	                     a process that died and is removed by Open.
//
// Other entries of the root (snapshots/, cache/, index.json, tmp/) belong to
// other packages and are left alone.
//
// # Concurrency
//
// Several goroutines and several processes may use one store at once. Blob
// creation is a rename(2) of a fully written and fsynced file, so readers
// never see partial blobs, and two writers of the same blob both succeed:
// "already exists" is success. Deleting a blob that another process is
// about to reference is the caller's problem (garbage collection needs a
// higher-level lock).
package content

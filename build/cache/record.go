package cache

import (
	"encoding/json"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Record is what the cache keeps for a step: its key and the layer it
// produced. Empty marks a record of an older builder that gave a step that
// changed nothing no layer; such a record is never used. Preimage is the key's preimage, kept so a
// later miss can be explained.
//
// The local store and the exported cache format (package cacheio) write
// the same JSON, except that the local store leaves the key out of the
// record file, whose name it is. The tags keep both byte for byte what
// they were when the two formats had types of their own (see the package
// doc).
type Record struct {
	Key       Key             `json:"key,omitempty"`
	Empty     bool            `json:"empty,omitempty"` // legacy: no layer, never used
	DiffID    v1.Hash         `json:"diffID,omitzero"` // zero (and left out) for an empty record
	Digest    v1.Hash         `json:"digest,omitzero"`
	Size      int64           `json:"size,omitempty"`
	MediaType string          `json:"mediaType,omitempty"`
	Created   time.Time       `json:"created"`
	Preimage  json.RawMessage `json:"preimage,omitempty"`
}

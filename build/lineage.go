package build

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/cache"
	"builder/snapshot/content"
)

// previousLayer returns the layer blob that the last build of the same
// Dockerfile step wrote, for content.LayerOptions.Previous: the gzip
// members of a rebuilt step whose bytes did not change (a COPY after one
// file changed, a RUN that rewrites most of what it wrote before) are then
// copied from it instead of compressed again.
//
// "The same step" is the step index that --explain-cache keeps
// (cache.StepID: the absolute Dockerfile path, the stage's index, the
// step's position in the stage and its kind), which explain read just
// before the miss: prevKey is the key that step had last time. It is the
// step a user thinks of as "this COPY" however its inputs or the steps
// before it changed, it costs no lookup of its own, and it is kept and
// collected with the cache. A wrong guess (two Dockerfiles at one path,
// another platform's build of the step) costs only the reading of a
// sidecar: members are reused only where their uncompressed bytes are
// equal and checked (content.prevLayer.reuse), so the blob is the same
// bytes whichever previous layer, if any, was named.
func (j *job) previousLayer(prevKey, key cache.Key) v1.Hash {
	if prevKey == "" || prevKey == key {
		return v1.Hash{}
	}
	r, ok, err := j.b.cache.Get(prevKey)
	if err != nil || !ok || r.Empty || r.MediaType != content.MediaTypeLayerGzip || !j.b.store.Has(r.Digest) {
		return v1.Hash{}
	}
	return r.Digest
}

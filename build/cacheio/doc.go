// Package cacheio moves builder's step cache between stores: it encodes the
// records of a build as an OCI artifact and writes it to a registry or an
// OCI image layout directory (export), and reads such an artifact, or the
// cache metadata an image carries inline in its config, back (import).
//
// # Format (version builder.cache.v1)
//
// A cache is an OCI image manifest (application/vnd.oci.image.manifest.v1+json)
// whose config blob has the media type ConfigMediaType and holds a Config:
// the version string, the step records and the cache mounts. Its layers are
// the layer blobs the records name (each once, in the order records first
// name them), then one layer per exported cache mount, annotated with
// AnnotationMountID. A record names its layer by digest; an empty record
// (a step that changed nothing) names none. Keys are the hex sha256 step
// keys of package cache; they depend only on a step's inputs, never on the
// machine, so a record written on one machine is valid on every other.
//
// Inline caches put the same Config (without mounts) under the top-level
// field InlineField of an image config; the records then name the image's
// own layers.
//
// # Lifecycle
//
// Import fetches the manifest and config only. Blobs are fetched one by one
// with (*Cache).Fetch, when the caller needs them; every fetched byte is
// checked against the digest (and size) the manifest gives before it is
// stored, and a blob that does not match is not stored. Export writes the
// blobs first and the manifest last, so a reader never sees a manifest whose
// blobs are missing; exporting the same cache twice is idempotent.
//
// Registry caches are read and written through the build's
// registry.Client, with its credentials, TLS settings and retries: an
// import looks for the manifest on the mirrors of the cache's registry
// first, as a pull does, and fetches the blobs from the source that had
// it; an export goes to the registry named, never a mirror. Local caches
// are OCI layouts read with go-containerregistry's layout package.
package cacheio

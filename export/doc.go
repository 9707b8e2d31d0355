// Package export turns what the content store holds into images and images
// into files: a ggcr v1.Layer and v1.Image backed by store blobs (NewLayer,
// LoadImage), the reverse direction (WriteImage), the tag index kept in
// <root>/index.json (Index), and the archive formats other tools read: OCI
// archives (WriteOCIArchive), docker-load archives (WriteDockerArchive) and
// OCI layout directories (WriteOCIDir).
//
// Every writer streams layer blobs from the store; no layer is held in
// memory. Only manifests and configs, which are small, are read whole.
package export

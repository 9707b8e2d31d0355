// Package attest makes supply-chain attestations of a build: in-toto
// statements (https://in-toto.io/Statement/v0.1, as BuildKit writes them)
// whose predicate is SLSA v1 provenance made from a Record of the build, or
// an SPDX document an SBOM scanner wrote; and the attestation manifest that
// carries them next to the image, in the layout of BuildKit's attestation
// storage (docs/attestations/attestation-storage.md in moby/buildkit) with
// the OCI 1.1 subject and artifactType of its oci-artifact form, so one
// manifest serves both an image index entry and a referrer.
//
// Field names and values follow what BuildKit v0.26 writes for the same
// Dockerfile wherever the concepts are the same (see provenance_test.go,
// which compares against a provenance captured from buildkitd). The package
// reads nothing but its arguments; it neither builds nor pushes.
package attest

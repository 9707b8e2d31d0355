// Package output writes a finished build to its outputs (-o/--output, as
// buildx spells them): it tags the image in the local store, writes OCI
// and docker archives, OCI layout directories and root filesystems, pushes
// to registries through the one registry.Client, and writes the digests
// --iidfile and --metadata-file record.
//
// It takes the built image and parsed output Specs; reading the command
// line and printing belong to cmd/builder. Files are written under a
// temporary name and renamed, so a failed output leaves no partial file.
package output

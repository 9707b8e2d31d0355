package snapshot

import (
	"crypto/sha256"
	"encoding/hex"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ChainIDs returns the OCI chain ID of every prefix of diffIDs: the names
// of the committed snapshots that hold those layers.
func ChainIDs(diffIDs []v1.Hash) []string {
	out := make([]string, len(diffIDs))
	prev := ""
	for i, d := range diffIDs {
		prev = NextChainID(prev, d)
		out[i] = prev
	}
	return out
}

// NextChainID is the chain ID of a layer with diff ID d on top of the chain
// parent ("" for the first layer).
func NextChainID(parent string, d v1.Hash) string {
	if parent == "" {
		return d.String()
	}
	sum := sha256.Sum256([]byte(parent + " " + d.String()))
	return "sha256:" + hex.EncodeToString(sum[:])
}

package output

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/internal/atomicfile"
)

// WriteIDFile writes the image ID (the manifest digest), as --iidfile
// asks.
func WriteIDFile(path string, r *Result) error {
	if err := os.WriteFile(path, []byte(r.Digest.String()), 0o644); err != nil {
		return fmt.Errorf("write iidfile: %w", err)
	}
	return nil
}

// WriteMetadata writes the JSON buildx's --metadata-file holds: the
// manifest and config digests, the descriptor and the names. The file is
// replaced atomically.
func WriteMetadata(path string, r *Result) error {
	m := map[string]any{
		"containerimage.digest": r.Digest.String(),
		"containerimage.descriptor": map[string]any{
			"mediaType": r.MediaType, "digest": r.Digest.String(), "size": r.Size,
		},
	}
	if r.Config != (v1.Hash{}) { // an index has none
		m["containerimage.config.digest"] = r.Config.String()
	}
	if len(r.Names) > 0 {
		m["image.name"] = strings.Join(r.Names, ",")
	}
	if r.BuildRef != "" {
		m["buildx.build.ref"] = r.BuildRef
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		err = atomicfile.WriteFile(abs, append(b, '\n'), 0o644)
	}
	if err != nil {
		return fmt.Errorf("write metadata file: %w", err)
	}
	return nil
}

package registry

import (
	"encoding/json"
	"errors"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// MediaTypeOf reads the media type a manifest or index declares. Without a
// mediaType field, a "manifests" list makes it an OCI index and
// schemaVersion 2 an OCI manifest, as the OCI spec allows; anything else
// is an error.
func MediaTypeOf(raw []byte) (types.MediaType, error) {
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     types.MediaType `json:"mediaType"`
		Manifests     []any           `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return "", err
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType, nil
	case probe.Manifests != nil:
		return types.OCIImageIndex, nil
	case probe.SchemaVersion == 2:
		return types.OCIManifestSchema1, nil
	}
	return "", errors.New("manifest without media type")
}

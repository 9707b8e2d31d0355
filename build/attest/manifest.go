package attest

import (
	"bytes"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations and types of attestation manifests.
const (
	// AnnotationReferenceType marks an index entry as an attestation
	// manifest (value ReferenceTypeAttestation).
	AnnotationReferenceType  = "vnd.docker.reference.type"
	ReferenceTypeAttestation = "attestation-manifest"
	// AnnotationReferenceDigest is the digest of the manifest an
	// attestation manifest is about.
	AnnotationReferenceDigest = "vnd.docker.reference.digest"
	// ArtifactType is the artifactType of an attestation manifest stored
	// as an OCI 1.1 referrer, as BuildKit's oci-artifact=true writes it.
	ArtifactType = "application/vnd.docker.attestation.manifest.v1+json"
	// MediaTypeEmpty is the OCI empty JSON descriptor's media type.
	MediaTypeEmpty = "application/vnd.oci.empty.v1+json"
)

// Unknown is the platform of an attestation manifest in an index, which
// keeps runtimes from picking it.
var Unknown = v1.Platform{OS: "unknown", Architecture: "unknown"}

// Bundle is an attestation manifest and every blob it names, ready to be
// written to a store or pushed.
type Bundle struct {
	Manifest []byte
	// Descriptor describes Manifest as an index entry: media type, digest,
	// size, platform unknown/unknown and the reference annotations.
	Descriptor v1.Descriptor
	Blobs      map[v1.Hash][]byte // config and statements
}

// NewBundle makes the attestation manifest of statements about the image
// manifest subject. With referrer set it takes BuildKit's oci-artifact
// form: an empty config, artifactType ArtifactType and subject set, so the
// same manifest is also an OCI 1.1 referrer of the image; otherwise
// BuildKit's default form, whose config is an unknown/unknown image
// config listing the statements as diff IDs.
func NewBundle(subject v1.Descriptor, stmts []*Statement, referrer bool) (*Bundle, error) {
	if len(stmts) == 0 {
		return nil, fmt.Errorf("attestation manifest: no statements")
	}
	b := &Bundle{Blobs: map[v1.Hash][]byte{}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	var diffIDs []v1.Hash
	for _, s := range stmts {
		raw, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("encode statement: %w", err)
		}
		d := b.add(raw)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: MediaTypeInToto, Digest: d, Size: int64(len(raw)),
			Annotations: map[string]string{AnnotationPredType: s.PredicateType}})
		diffIDs = append(diffIDs, d)
	}
	if referrer {
		m.Config = v1.Descriptor{MediaType: MediaTypeEmpty, Digest: b.add([]byte("{}")), Size: 2}
		m.ArtifactType = ArtifactType
		m.Subject = &v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	} else {
		cfg, err := json.Marshal(v1.ConfigFile{OS: Unknown.OS, Architecture: Unknown.Architecture,
			RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}})
		if err != nil {
			return nil, err
		}
		m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: b.add(cfg), Size: int64(len(cfg))}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	d, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	b.Manifest = raw
	p := Unknown
	b.Descriptor = v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: d, Size: size, Platform: &p,
		Annotations: map[string]string{
			AnnotationReferenceType:   ReferenceTypeAttestation,
			AnnotationReferenceDigest: subject.Digest.String(),
		}}
	return b, nil
}

func (b *Bundle) add(raw []byte) v1.Hash {
	d, _, _ := v1.SHA256(bytes.NewReader(raw))
	b.Blobs[d] = raw
	return d
}

// IsAttestation reports whether an index entry is an attestation manifest.
func IsAttestation(d v1.Descriptor) bool {
	return d.Annotations[AnnotationReferenceType] == ReferenceTypeAttestation
}

// Image returns the attestation manifest as a v1.Image whose config and
// layers are the bundle's blobs, for pushing or writing with
// go-containerregistry.
func (b *Bundle) Image() (v1.Image, error) {
	return partial.CompressedToImage(bundleImage{b})
}

// bundleImage is a Bundle as partial.CompressedImageCore.
type bundleImage struct{ b *Bundle }

func (i bundleImage) RawManifest() ([]byte, error) { return i.b.Manifest, nil }

func (i bundleImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

func (i bundleImage) RawConfigFile() ([]byte, error) {
	m, err := v1.ParseManifest(bytes.NewReader(i.b.Manifest))
	if err != nil {
		return nil, err
	}
	return i.b.Blobs[m.Config.Digest], nil
}

func (i bundleImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	raw, ok := i.b.Blobs[h]
	if !ok {
		return nil, fmt.Errorf("attestation manifest has no blob %s", h)
	}
	m, err := v1.ParseManifest(bytes.NewReader(i.b.Manifest))
	if err != nil {
		return nil, err
	}
	mt := types.MediaType(MediaTypeInToto)
	if h == m.Config.Digest {
		mt = m.Config.MediaType
	}
	return static.NewLayer(raw, mt).(partial.CompressedLayer), nil
}

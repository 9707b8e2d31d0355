package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/registry"
	"builder/export"
	"builder/export/imagediff"
)

// imageInfo is what `builder inspect` shows of an image: docker's fields
// (Id, RepoTags, RepoDigests, Created, Os, Architecture, Config, RootFS),
// then the manifest digest, and each layer with its size and the history
// entry (the build step) that made it.
type imageInfo struct {
	Id           string          `json:"Id"` // the config digest, docker's spelling for templates
	RepoTags     []string        `json:"RepoTags"`
	RepoDigests  []string        `json:"RepoDigests"`
	Name         string          `json:"Name"`
	Digest       string          `json:"Digest"`
	MediaType    string          `json:"MediaType"`
	Size         int64           `json:"Size"` // manifest, config and layer blobs
	Created      *time.Time      `json:"Created,omitempty"`
	Architecture string          `json:"Architecture"`
	Os           string          `json:"Os"`
	Config       v1.Config       `json:"Config"`
	Layers       []layerInfo     `json:"Layers"`
	History      []v1.History    `json:"History"`
	ConfigDigest string          `json:"ConfigDigest"`
	RootFS       rootFS          `json:"RootFS"`
	Annotations  json.RawMessage `json:"Annotations,omitempty"`
	// Index and Platforms describe a multi-platform image, whose host
	// platform's image (else the first) the other fields show.
	Index     string   `json:"Index,omitempty"`
	Platforms []string `json:"Platforms,omitempty"`
}

// rootFS is the config's rootfs in docker inspect's spelling.
type rootFS struct {
	Type   string   `json:"Type"`
	Layers []string `json:"Layers"`
}

// layerInfo is one layer of an image and the step that made it.
type layerInfo struct {
	Digest    string `json:"Digest"`
	DiffID    string `json:"DiffID"`
	Size      int64  `json:"Size"` // compressed size as stored
	MediaType string `json:"MediaType"`
	CreatedBy string `json:"CreatedBy,omitempty"`
	Comment   string `json:"Comment,omitempty"`
}

// inspectImage collects the inspect view of an image; names are the
// names it has (for RepoTags and RepoDigests).
func inspectImage(ref string, img v1.Image, names []string) (*imageInfo, error) {
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: read manifest: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: read config: %w", ref, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	size, err := img.Size()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	info := &imageInfo{Id: m.Config.Digest.String(), RepoTags: []string{}, RepoDigests: []string{},
		Name: ref, Digest: digest.String(), MediaType: string(mt), Size: size + m.Config.Size,
		Architecture: cf.Architecture, Os: cf.OS, Config: cf.Config, History: cf.History,
		ConfigDigest: m.Config.Digest.String(), RootFS: rootFS{Type: cf.RootFS.Type, Layers: []string{}}}
	for _, d := range cf.RootFS.DiffIDs {
		info.RootFS.Layers = append(info.RootFS.Layers, d.String())
	}
	// Docker spells both lists familiarly: app:1, not docker.io/library/app:1.
	for _, n := range names {
		if r, err := name.ParseReference(n); err == nil {
			repo := familiarRepo(r.Context())
			if t, ok := r.(name.Tag); ok {
				info.RepoTags = append(info.RepoTags, repo+":"+t.TagStr())
			}
			if rd := repo + "@" + digest.String(); !slices.Contains(info.RepoDigests, rd) {
				info.RepoDigests = append(info.RepoDigests, rd)
			}
		}
	}
	if !cf.Created.IsZero() {
		t := cf.Created.Time.UTC()
		info.Created = &t
	}
	if len(m.Annotations) > 0 {
		info.Annotations, _ = json.Marshal(m.Annotations)
	}
	// The history entries that are not empty layers made the layers, in order.
	var makers []v1.History
	for _, h := range cf.History {
		if !h.EmptyLayer {
			makers = append(makers, h)
		}
	}
	for i, l := range m.Layers {
		li := layerInfo{Digest: l.Digest.String(), Size: l.Size, MediaType: string(l.MediaType)}
		info.Size += l.Size
		if i < len(cf.RootFS.DiffIDs) {
			li.DiffID = cf.RootFS.DiffIDs[i].String()
		}
		if len(makers) == len(m.Layers) {
			li.CreatedBy, li.Comment = makers[i].CreatedBy, makers[i].Comment
		}
		info.Layers = append(info.Layers, li)
	}
	return info, nil
}

func runInspect(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("inspect", g)
	format := fs.StringP("format", "f", "json", "output format: json (an array, as docker's), or a Go template applied to each image (e.g. '{{.Config.Cmd}}')")
	var insecure []string
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	attestations := fs.Bool("attestations", false, "show the image's attestations (in-toto statements: provenance, SBOMs) instead")
	usage := "builder inspect [OPTIONS] IMAGE [IMAGE...]\n\n" +
		"Show images as a JSON array in docker's shape (Id, RepoTags, RepoDigests, Config,\n" +
		"RootFS, Os, Architecture), with the manifest digest and the layers with their\n" +
		"sizes (bytes) and the step (history entry) that made each. IMAGE is a local name or\n" +
		"image ID, docker://REF for a registry, oci-archive:FILE, docker-archive:FILE or oci:DIR.\n\n" +
		"Examples:\n" +
		"  builder inspect app\n" +
		"  builder inspect docker://registry.example.com/app:1\n" +
		"  builder inspect oci-archive:app.tar\n" +
		"  builder inspect --format '{{.Digest}}' app\n" +
		"  builder inspect -f '{{range .Layers}}{{.Size}} {{.CreatedBy}}{{\"\\n\"}}{{end}}' app\n" +
		"  builder inspect -f '{{json .Config.Env}}' app\n" +
		"  builder inspect --attestations -f '{{json .Provenance}}' app"
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("builder inspect needs at least one IMAGE (see 'builder inspect --help')")
	}
	var tmpl *template.Template
	if *format != "json" {
		t, err := parseTemplate(*format)
		if err != nil {
			return err
		}
		tmpl = t
	}
	if *attestations {
		if fs.NArg() != 1 {
			return usagef("builder inspect --attestations takes one IMAGE")
		}
		ai, err := g.inspectAttestations(ctx, fs.Arg(0), insecure)
		if err != nil {
			return err
		}
		if tmpl == nil {
			enc := json.NewEncoder(os.Stdout)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			return enc.Encode(ai)
		}
		return executeLine(os.Stdout, tmpl, ai)
	}
	var infos []*imageInfo
	for _, ref := range fs.Args() {
		info, err := g.inspectAny(ctx, ref, insecure)
		if err != nil {
			return err
		}
		infos = append(infos, info)
	}
	if tmpl == nil {
		enc := json.NewEncoder(os.Stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(infos)
	}
	for _, info := range infos {
		if err := executeLine(os.Stdout, tmpl, info); err != nil {
			return err
		}
	}
	return nil
}

// inspectAny describes the image ref names: in a registry (docker://), an
// archive or layout (oci-archive:, docker-archive:, oci:), or the store.
func (g *globals) inspectAny(ctx context.Context, ref string, insecure []string) (*imageInfo, error) {
	if r, ok := strings.CutPrefix(ref, "docker://"); ok {
		return g.inspectRemote(ctx, r, insecure)
	}
	for _, p := range []string{"oci-archive:", "docker-archive:", "oci:"} {
		if strings.HasPrefix(ref, p) {
			src, err := imagediff.Open(ctx, ref, imagediff.OpenOptions{})
			if err != nil {
				return nil, err
			}
			defer src.Close()
			return inspectImage(ref, src.Image, nil)
		}
	}
	return g.inspectStored(ref)
}

// inspectStored describes the image the local store holds under name.
func (g *globals) inspectStored(name string) (*imageInfo, error) {
	s, idx, err := g.openStore()
	if err != nil {
		return nil, err
	}
	r, img, ix, err := lookupImageIndex(s, idx, name)
	if err != nil {
		return nil, err
	}
	info, err := inspectImage(name, img, r.Names)
	if err != nil || ix == nil {
		return info, err
	}
	d, err := ix.Digest()
	if err != nil {
		return nil, err
	}
	images, err := export.IndexImages(ix)
	if err != nil {
		return nil, err
	}
	info.Index = d.String()
	for _, pi := range images {
		info.Platforms = append(info.Platforms, export.PlatformString(pi.Platform))
	}
	return info, nil
}

// inspectRemote describes the image a registry holds under ref, for the
// host's platform, reading manifest and config only.
func (g *globals) inspectRemote(ctx context.Context, ref string, insecure []string) (*imageInfo, error) {
	_, r, img, err := g.remoteImage(ctx, ref, insecure)
	if err != nil {
		return nil, err
	}
	return inspectImage("docker://"+ref, img, []string{r.Name()})
}

// remoteImage opens the host platform's image of ref in its registry,
// reading manifest and config only.
func (g *globals) remoteImage(ctx context.Context, ref string, insecure []string) (*registry.Client, name.Reference, v1.Image, error) {
	rc, err := g.registryClient(insecure)
	if err != nil {
		return nil, nil, nil, err
	}
	r, err := rc.ParseReference(ref)
	if err != nil {
		return nil, nil, nil, usagef("docker://%s: %w", ref, err)
	}
	img, err := rc.Image(ctx, r, v1.Platform{OS: "linux", Architecture: hostArch()})
	if err != nil {
		return nil, nil, nil, &remoteError{ref: ref, err: err}
	}
	return rc, r, img, nil
}

// remoteError is a failed read of an image in a registry: one line naming
// the reference. Unwrap gives the cause (a registry's answer is a
// *transport.Error).
type remoteError struct {
	ref string
	err error
}

func (e *remoteError) Error() string { return "inspect " + e.ref + ": " + registry.Describe(e.err) }

// Unwrap returns the cause.
func (e *remoteError) Unwrap() error { return e.err }

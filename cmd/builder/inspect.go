package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/registry"
	"builder/export"
)

// imageInfo is what `builder inspect` shows of an image: its manifest
// digest, config, and each layer with its size and the history entry (the
// build step) that made it.
type imageInfo struct {
	Name         string          `json:"Name"`
	Digest       string          `json:"Digest"`
	MediaType    string          `json:"MediaType"`
	Size         int64           `json:"Size"` // manifest, config and layer blobs
	Created      *time.Time      `json:"Created,omitempty"`
	Architecture string          `json:"Architecture"`
	OS           string          `json:"Os"`
	Config       v1.Config       `json:"Config"`
	Layers       []layerInfo     `json:"Layers"`
	History      []v1.History    `json:"History"`
	ConfigDigest string          `json:"ConfigDigest"`
	RootFS       v1.RootFS       `json:"RootFS"`
	Annotations  json.RawMessage `json:"Annotations,omitempty"`
	// Index and Platforms describe a multi-platform image, whose host
	// platform's image (else the first) the other fields show.
	Index     string   `json:"Index,omitempty"`
	Platforms []string `json:"Platforms,omitempty"`
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

// inspectImage collects the inspect view of a local image.
func inspectImage(ref string, img v1.Image) (*imageInfo, error) {
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
	info := &imageInfo{Name: ref, Digest: digest.String(), MediaType: string(mt), Size: size + m.Config.Size,
		Architecture: cf.Architecture, OS: cf.OS, Config: cf.Config, History: cf.History,
		ConfigDigest: m.Config.Digest.String(), RootFS: cf.RootFS}
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
	format := fs.StringP("format", "f", "json", "output format: json, or a Go template applied to the image (e.g. '{{.Config.Cmd}}')")
	var insecure []string
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	usage := "builder inspect [OPTIONS] IMAGE\n\n" +
		"Show a local image, or with docker://REF one in a registry: manifest digest,\n" +
		"config, layers with their sizes and the step (history entry) that made each.\n\n" +
		"Examples:\n" +
		"  builder inspect app\n" +
		"  builder inspect docker://registry.example.com/app:1\n" +
		"  builder inspect --format '{{.Digest}}' app\n" +
		"  builder inspect -f '{{range .Layers}}{{.Size}} {{.CreatedBy}}{{\"\\n\"}}{{end}}' app\n" +
		"  builder inspect -f '{{json .Config.Env}}' app"
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("builder inspect needs exactly one IMAGE (see 'builder inspect --help')")
	}
	var tmpl *template.Template
	if *format != "json" {
		t, err := template.New("format").Funcs(template.FuncMap{
			"json": func(v any) (string, error) {
				b, err := json.Marshal(v)
				return string(b), err
			},
			"join": strings.Join,
		}).Parse(*format)
		if err != nil {
			return usagef("--format: %w", err)
		}
		tmpl = t
	}
	var info *imageInfo
	var err error
	if ref, ok := strings.CutPrefix(fs.Arg(0), "docker://"); ok {
		info, err = g.inspectRemote(ctx, ref, insecure)
	} else {
		info, err = g.inspectStored(fs.Arg(0))
	}
	if err != nil {
		return err
	}
	return printInspect(os.Stdout, info, tmpl)
}

// inspectStored describes the image the local store holds under name.
func (g *globals) inspectStored(name string) (*imageInfo, error) {
	s, idx, err := g.openStore()
	if err != nil {
		return nil, err
	}
	img, ix, err := lookupImageIndex(s, idx, name)
	if err != nil {
		return nil, err
	}
	info, err := inspectImage(name, img)
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
	rc, err := g.registryClient(insecure)
	if err != nil {
		return nil, err
	}
	r, err := rc.ParseReference(ref)
	if err != nil {
		return nil, usagef("docker://%s: %w", ref, err)
	}
	img, err := rc.Image(ctx, r, v1.Platform{OS: "linux", Architecture: hostArch()})
	if err != nil {
		return nil, &remoteError{ref: ref, err: err}
	}
	return inspectImage("docker://"+ref, img)
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

// printInspect writes info as indented JSON, or through tmpl followed by
// a newline.
func printInspect(w io.Writer, info *imageInfo, tmpl *template.Template) error {
	if tmpl == nil {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, info); err != nil {
		return fmt.Errorf("format: %w", err)
	}
	out := b.String()
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	_, err := io.WriteString(w, out)
	return err
}

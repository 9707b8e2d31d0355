package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"builder/build"
	"builder/build/push"
	"builder/build/registry"
	"builder/export"
	"builder/internal/atomicfile"
	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// output is one -o/--output destination, as buildx spells it.
type output struct {
	Type    string   // image, registry, oci, docker, local or tar
	Dest    string   // file or directory; "-" is stdout
	Names   []string // name=: image names; default the -t tags
	Push    bool     // push=true, or type=registry
	Tar     bool     // tar=false writes an OCI layout directory
	Convert export.ConvertOptions
}

// outputAttrs are the attributes each output type takes besides type=.
var outputAttrs = map[string][]string{
	"image":    {"name", "push", "compression", "compression-level", "force-compression", "oci-mediatypes"},
	"registry": {"name", "push", "compression", "compression-level", "force-compression", "oci-mediatypes"},
	"oci":      {"dest", "name", "tar", "compression", "compression-level", "force-compression", "oci-mediatypes"},
	"docker":   {"dest", "name", "compression", "compression-level", "force-compression", "oci-mediatypes"},
	"local":    {"dest"},
	"tar":      {"dest"},
}

// parseOutput reads buildx's output syntax: comma-separated KEY=VALUE
// fields (CSV quoting allowed, so name="a,b" names two images), a bare "-"
// meaning type=tar to stdout, or a bare path meaning type=local.
func parseOutput(s string) (output, error) {
	if s == "-" {
		return output{Type: "tar", Dest: "-"}, nil
	}
	if !strings.Contains(s, "=") {
		return output{Type: "local", Dest: s}, nil
	}
	fields, err := csv.NewReader(strings.NewReader(s)).Read()
	if err != nil {
		return output{}, usagef("invalid output %q: %v", s, err)
	}
	attrs := map[string]string{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return output{}, usagef("invalid output %q: %q is not KEY=VALUE", s, f)
		}
		attrs[strings.ToLower(strings.TrimSpace(k))] = v
	}
	o := output{Type: attrs["type"], Dest: attrs["dest"], Tar: true}
	delete(attrs, "type")
	known, ok := outputAttrs[o.Type]
	switch {
	case o.Type == "":
		return o, usagef("invalid output %q: no type=", s)
	case !ok:
		return o, usagef("output type %q is not supported (image, registry, oci, docker, local, tar)", o.Type)
	}
	for k := range attrs {
		if !contains(known, k) {
			return o, usagef("output type %s does not take %s= (it takes %s)", o.Type, k, strings.Join(known, ", "))
		}
	}
	boolAttr := func(k string, def bool) (bool, error) {
		v, ok := attrs[k]
		if !ok {
			return def, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return def, usagef("output %s: %s=%q is not true or false", o.Type, k, v)
		}
		return b, nil
	}
	if n := attrs["name"]; n != "" {
		for _, x := range strings.Split(n, ",") {
			if x = strings.TrimSpace(x); x != "" {
				o.Names = append(o.Names, x)
			}
		}
	}
	if o.Push, err = boolAttr("push", o.Type == "registry"); err != nil {
		return o, err
	}
	if o.Tar, err = boolAttr("tar", true); err != nil {
		return o, err
	}
	if o.Convert.Force, err = boolAttr("force-compression", false); err != nil {
		return o, err
	}
	switch c := attrs["compression"]; c {
	case "", content.Gzip, content.Zstd, content.Uncompressed:
		o.Convert.Compression = c
	default:
		return o, usagef("output %s: compression=%q: use gzip, zstd or uncompressed", o.Type, c)
	}
	if v, ok := attrs["compression-level"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 22 {
			return o, usagef("output %s: compression-level=%q is not a level (gzip 1-9, zstd 1-22)", o.Type, v)
		}
		o.Convert.Level = n
		if o.Convert.Compression == "" {
			o.Convert.Compression = content.Gzip
		}
	}
	if o.Convert.Force && o.Convert.Compression == "" {
		o.Convert.Compression = content.Gzip
	}
	if o.Type == "docker" {
		o.Convert.MediaTypes = export.MediaTypesDocker
	}
	if _, ok := attrs["oci-mediatypes"]; ok {
		oci, err := boolAttr("oci-mediatypes", true)
		if err != nil {
			return o, err
		}
		o.Convert.MediaTypes = export.MediaTypesDocker
		if oci {
			o.Convert.MediaTypes = export.MediaTypesOCI
		}
	}
	switch o.Type {
	case "oci", "docker", "local", "tar":
		if o.Dest == "" {
			return o, usagef("output type %s needs dest=", o.Type)
		}
	}
	if o.Dest == "-" && (o.Type == "local" || (o.Type == "oci" && !o.Tar)) {
		return o, usagef("output type %s cannot be written to stdout", o.Type)
	}
	return o, nil
}

// exported describes the image an output wrote, for --iidfile and
// --metadata-file.
type exported struct {
	Digest    v1.Hash
	Config    v1.Hash
	MediaType string
	Size      int64
	Names     []string
}

// exporter writes a build's result to its outputs. Converted variants of
// the image are made once per set of conversion options.
type exporter struct {
	store    *content.Store
	index    *export.Index
	root     string // the store root: scratch space goes under root/tmp
	rc       *registry.Client
	progress func(string)
	meter    registry.MeterFunc // counts push bytes; nil shows none

	converted map[export.ConvertOptions]v1.Image
}

func newExporter(b *build.Builder, root string, progress func(string)) *exporter {
	return &exporter{store: b.Store(), index: b.Index(), root: root, rc: b.Registry(), progress: progress,
		converted: map[export.ConvertOptions]v1.Image{}}
}

// image returns res's image converted as o says.
func (e *exporter) image(ctx context.Context, img v1.Image, o export.ConvertOptions) (v1.Image, error) {
	if !o.Changes() {
		return img, nil
	}
	if c, ok := e.converted[o]; ok {
		return c, nil
	}
	_, c, err := export.Convert(ctx, e.store, img, o)
	if err != nil {
		return nil, err
	}
	e.converted[o] = c
	return c, nil
}

// exportAll writes every output in order and returns what the first output
// that makes an image (image, registry, oci, docker) exported; without one,
// the build's own image.
func (e *exporter) exportAll(ctx context.Context, outs []output, res *build.Result) (*exported, error) {
	var first *exported
	for _, out := range outs {
		ex, err := e.write(ctx, out, res)
		if err != nil {
			return nil, err
		}
		if first == nil && ex != nil {
			first = ex
		}
	}
	if first == nil {
		return describeImage(res.Image, res.Tags)
	}
	return first, nil
}

// write writes the image to one output. Files are written under a
// temporary name and renamed, so a failed export leaves no partial file.
func (e *exporter) write(ctx context.Context, out output, res *build.Result) (*exported, error) {
	names := out.Names
	if len(names) == 0 {
		names = res.Tags
	}
	switch out.Type {
	case "local":
		if err := export.UnpackRootfs(ctx, out.Dest, res.Image); err != nil {
			return nil, fmt.Errorf("export local to %s: %w", out.Dest, err)
		}
		e.progress(fmt.Sprintf("exported the root filesystem to %s", out.Dest))
		return nil, nil
	case "tar":
		scratch := filepath.Join(e.root, "tmp")
		if err := os.MkdirAll(scratch, 0o700); err != nil {
			return nil, fmt.Errorf("export tar: %w", err)
		}
		err := writeDest(out.Dest, func(w io.Writer) error {
			return export.WriteRootfsTar(ctx, w, res.Image, scratch)
		})
		if err != nil {
			return nil, fmt.Errorf("export tar to %s: %w", out.Dest, err)
		}
		e.progress(fmt.Sprintf("exported the root filesystem as a tar to %s", destName(out.Dest)))
		return nil, nil
	}
	img, err := e.image(ctx, res.Image, out.Convert)
	if err != nil {
		return nil, err
	}
	switch out.Type {
	case "image":
		if err := e.tagAll(img, names); err != nil {
			return nil, err
		}
	case "registry":
		if len(names) == 0 {
			return nil, usagef("output type registry needs name= or a -t tag")
		}
	case "oci":
		refName := "latest"
		if len(names) > 0 {
			refName = names[0]
		}
		if !out.Tar {
			err = export.WriteOCIDir(ctx, out.Dest, img, refName)
		} else {
			err = writeDest(out.Dest, func(w io.Writer) error { return export.WriteOCIArchive(ctx, w, img, refName) })
		}
		if err != nil {
			return nil, fmt.Errorf("export oci to %s: %w", out.Dest, err)
		}
		e.progress(fmt.Sprintf("exported oci image to %s", destName(out.Dest)))
	case "docker":
		err = writeDest(out.Dest, func(w io.Writer) error { return export.WriteDockerArchive(ctx, w, img, names) })
		if err != nil {
			return nil, fmt.Errorf("export docker to %s: %w", out.Dest, err)
		}
		e.progress(fmt.Sprintf("exported docker image to %s", destName(out.Dest)))
	}
	if out.Push {
		if len(names) == 0 {
			return nil, usagef("push needs name= or a -t tag")
		}
		if err := e.push(ctx, img, names); err != nil {
			return nil, err
		}
	}
	return describeImage(img, names)
}

// tagAll points names at img in the local store's index.
func (e *exporter) tagAll(img v1.Image, names []string) error {
	d, err := img.Digest()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := e.index.Tag(n, v1.Descriptor{Digest: d}); err != nil {
			return err
		}
	}
	return nil
}

// push uploads img to names.
func (e *exporter) push(ctx context.Context, img v1.Image, names []string) error {
	_, err := push.Push(ctx, e.rc, img, names, push.Options{Progress: e.progress, Meter: e.meter})
	return err
}

// describeImage fills an exported record from an image.
func describeImage(img v1.Image, names []string) (*exported, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	size, err := img.Size()
	if err != nil {
		return nil, err
	}
	return &exported{Digest: d, Config: cfg, MediaType: string(mt), Size: size, Names: names}, nil
}

// writeMetadata writes the JSON buildx's --metadata-file holds.
func writeMetadata(path string, ex *exported) error {
	m := map[string]any{
		"containerimage.digest":        ex.Digest.String(),
		"containerimage.config.digest": ex.Config.String(),
		"containerimage.descriptor": map[string]any{
			"mediaType": ex.MediaType, "digest": ex.Digest.String(), "size": ex.Size,
		},
	}
	if len(ex.Names) > 0 {
		m["image.name"] = strings.Join(ex.Names, ",")
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write metadata file: %w", err)
	}
	return nil
}

func destName(dest string) string {
	if dest == "-" {
		return "stdout"
	}
	return dest
}

// writeDest runs fn on stdout for "-", else on a temporary file next to
// dest that is synced and renamed to dest (mode 0644) once fn succeeds.
func writeDest(dest string, fn func(io.Writer) error) error {
	return writeDestMode(dest, 0o644, fn)
}

func writeDestMode(dest string, mode os.FileMode, fn func(io.Writer) error) error {
	if dest == "-" {
		if isTerminal(os.Stdout) {
			return usagef("refusing to write a tar archive to a terminal; redirect stdout")
		}
		return fn(os.Stdout)
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return err
	}
	return atomicfile.Write(abs, mode, fn)
}

// writeFileAtomic writes data to path through a temporary file and rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return writeDestMode(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// toStdout reports whether an output writes to stdout, which then carries
// nothing else.
func toStdout(outs []output) bool {
	for _, o := range outs {
		if o.Dest == "-" {
			return true
		}
	}
	return false
}

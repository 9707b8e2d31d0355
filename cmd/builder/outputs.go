package main

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"builder/export"
	"builder/export/output"
	"builder/internal/atomicfile"
	"builder/snapshot/content"
)

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
func parseOutput(s string) (output.Spec, error) {
	if s == "-" {
		return output.Spec{Type: "tar", Dest: "-"}, nil
	}
	if !strings.Contains(s, "=") {
		return output.Spec{Type: "local", Dest: s}, nil
	}
	attrs, err := csvAttrs(s)
	if err != nil {
		return output.Spec{}, usagef("invalid output %q: %w", s, err)
	}
	o := output.Spec{Type: attrs["type"], Dest: attrs["dest"], Tar: true}
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

// writeDest runs fn on stdout for "-", else on a temporary file next to
// dest that is synced and renamed to dest (mode 0644) once fn succeeds.
func writeDest(dest string, fn func(io.Writer) error) error {
	return writeDestMode(dest, 0o644, fn)
}

func writeDestMode(dest string, mode os.FileMode, fn func(io.Writer) error) error {
	if dest == "-" {
		w, err := archiveStdout()
		if err != nil {
			return err
		}
		return fn(w)
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

// archiveStdout returns standard output for an archive, refusing a terminal.
func archiveStdout() (io.Writer, error) {
	if isTerminal(os.Stdout) {
		return nil, usagef("refusing to write a tar archive to a terminal; redirect stdout")
	}
	return os.Stdout, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// toStdout reports whether an output writes to stdout, which then carries
// nothing else.
func toStdout(outs []output.Spec) bool {
	for _, o := range outs {
		if o.Dest == "-" {
			return true
		}
	}
	return false
}

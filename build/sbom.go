package build

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/attest"
)

// DefaultSBOMGenerator is BuildKit's default SBOM scanner image.
const DefaultSBOMGenerator = "docker/buildkit-syft-scanner:stable-1"

// The paths of BuildKit's SBOM scanner protocol
// (docs/attestations/sbom-protocol.md in moby/buildkit).
const (
	scanSource = "/run/src/core/sbom"
	scanOut    = "/run/out"
	scanExtras = "/run/src/extras"
	// MaxSBOMSize bounds one statement a scanner writes; the statement
	// builder makes of its predicate (with the subjects) must stay within
	// attest.MaxStatementSize to be read back.
	MaxSBOMSize = attest.MaxStatementSize - 1<<20
	// MaxSBOMTotal bounds all the statements of one scan together, and
	// MaxSBOMFiles their number: each is held in memory and becomes a
	// statement.
	MaxSBOMTotal = 256 << 20
	MaxSBOMFiles = 1000
	// sbomScanContextArg asks for the context to be scanned too.
	sbomScanContextArg = "BUILDKIT_SBOM_SCAN_CONTEXT"
	// sbomScanStageArg asks for a stage the target reads to be scanned.
	sbomScanStageArg = "BUILDKIT_SBOM_SCAN_STAGE"
)

// sbomScanStages commits, untagged, the stages of needed other than the
// target whose BUILDKIT_SBOM_SCAN_STAGE enables them, and returns their
// images by stage name.
func (j *job) sbomScanStages(ctx context.Context, needed []int, target int) (map[string]v1.Image, error) {
	var out map[string]v1.Image
	for _, i := range needed {
		if i == target {
			continue
		}
		st, err := j.wait(ctx, i)
		if err != nil {
			return nil, err
		}
		if !j.sbomEnabled(sbomScanStageArg, st) {
			continue
		}
		res, err := j.commitImage(ctx, st, false)
		if err != nil {
			return nil, fmt.Errorf("sbom: stage %s: %w", st.name, err)
		}
		if out == nil {
			out = map[string]v1.Image{}
		}
		out[st.name] = res.Image
	}
	return out, nil
}

// sbomScanContext reports whether the SBOM scan includes the context:
// BUILDKIT_SBOM_SCAN_CONTEXT enables it for the target stage st.
func (j *job) sbomScanContext(st *stageState) bool {
	return j.sbomEnabled(sbomScanContextArg, st)
}

// sbomEnabled reports whether the arg k enables a scan for stage st, as
// BuildKit decides it: the value of k as a global ARG or an ARG of st (the
// stage's wins), a build arg overriding either, is true or a
// comma-separated list naming st. A build arg alone, with no such ARG,
// enables nothing (BuildKit's testSBOMScannerArgs).
func (j *job) sbomEnabled(k string, st *stageState) bool {
	var v string
	var ok bool
	if j.meta != nil {
		v, ok = j.meta.Get(k)
	}
	if st.args != nil {
		if sv, sok := st.args.Get(k); sok {
			v, ok = sv, true
		}
	}
	if !ok {
		return false
	}
	if b, err := strconv.ParseBool(v); err == nil {
		return b
	}
	return slices.Contains(strings.Split(v, ","), st.name)
}

// ScanSBOM runs the SBOM generator image (pulled and cached like any base)
// on the root filesystem of res's image with BuildKit's scanner protocol and returns
// the SPDX documents it wrote, by file name: the predicates of the in-toto
// statements it writes into $BUILDKIT_SCAN_DESTINATION. The scan is a build of
// its own: the generator's ENTRYPOINT and CMD run in the sandbox without
// network, the image's filesystem bound read-only at $BUILDKIT_SCAN_SOURCE
// (/run/src/core/sbom), a tmpfs at /tmp, and $BUILDKIT_SCAN_DESTINATION
// (/run/out) in the generator's filesystem, whose layer is read back. Like
// any step it is cached: the same generator on the same image scans once.
// The extras BuildKit scans are bound read-only under
// $BUILDKIT_SCAN_SOURCE_EXTRAS (/run/src/extras) as BuildKit binds them:
// each of res.SBOMStages at sbom-NAME and, with res.SBOMContext, o's
// context directory (its .dockerignore applied) at sbom-context.
// o gives the isolation, limits, progress and context; its Dockerfile,
// args and outputs do not apply.
func (b *Builder) ScanSBOM(ctx context.Context, res *Result, generator string, o Options) (map[string][]byte, error) {
	if generator == "" {
		generator = DefaultSBOMGenerator
	}
	if o.Platform.OS == "" {
		o.Platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	// The scan binds the images by names only this scan uses. The
	// generator runs on the scan's platform (the host's by default), as
	// BuildKit runs it; an image of another platform (of a multi-platform
	// build) is read through a stage of its own platform, which has no RUN
	// and so needs no emulator. bind returns what a mount's from= names.
	var tagged []string
	defer func() {
		for _, ref := range tagged {
			b.index.Untag(ref)
		}
	}()
	stages := ""
	bind := func(what string, img v1.Image) (string, error) {
		d, err := img.Digest()
		if err != nil {
			return "", err
		}
		ref := "builder-sbom-scan.invalid/" + what + ":" + d.Hex[:32]
		if err := b.tag(ref, d); err != nil {
			return "", fmt.Errorf("sbom: %w", err)
		}
		tagged = append(tagged, ref)
		cfg, err := img.ConfigFile()
		if err != nil || cfg.OS == "" {
			return ref, nil
		}
		p := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		if platformString(p) == platformString(o.Platform) {
			return ref, nil
		}
		stage := "sbom-" + what
		stages += "FROM --platform=" + platformString(p) + " " + ref + " AS " + stage + "\n"
		return stage, nil
	}
	target, err := bind("target", res.Image)
	if err != nil {
		return nil, err
	}
	env, mounts, contextDir := "", "", ""
	for _, name := range slices.Sorted(maps.Keys(res.SBOMStages)) {
		from, err := bind("stage-"+name, res.SBOMStages[name])
		if err != nil {
			return nil, err
		}
		mounts += " --mount=type=bind,from=" + from + ",target=" + scanExtras + "/sbom-" + name
	}
	if res.SBOMContext {
		mounts += " --mount=type=bind,target=" + scanExtras + "/sbom-context"
		contextDir = o.ContextDir
	}
	if mounts != "" {
		env = " BUILDKIT_SCAN_SOURCE_EXTRAS=" + scanExtras
	}
	scan := &job{b: b, o: o, progress: o.Progress}
	gen, err := scan.resolveImage(ctx, generator, o.Platform)
	if err != nil {
		return nil, fmt.Errorf("sbom generator %s: %w", generator, err)
	}
	args := append(append([]string{}, gen.config.Config.Entrypoint...), gen.config.Config.Cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("sbom generator %s has neither ENTRYPOINT nor CMD", generator)
	}
	argv, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	dir, err := scan.tempDir("sbom-")
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	defer os.RemoveAll(dir)
	workdir := ""
	if wd := gen.config.Config.WorkingDir; wd != "" {
		workdir = "WORKDIR " + wd + "\n"
	}
	if contextDir == "" {
		contextDir = dir
	}
	// exec-form RUN: the arguments are the generator's, unexpanded.
	dockerfile := stages + "FROM " + generator + "\n" +
		"WORKDIR " + scanOut + "\n" + workdir +
		"ENV BUILDKIT_SCAN_DESTINATION=" + scanOut + " BUILDKIT_SCAN_SOURCE=" + scanSource + env + "\n" +
		"RUN --network=none --mount=type=bind,from=" + target + ",target=" + scanSource + mounts +
		" --mount=type=tmpfs,target=/tmp " + string(argv) + "\n"
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte(dockerfile), 0o600); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	g, err := ReadDockerfile(df)
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	so := Options{ContextDir: contextDir, Dockerfile: df, Network: NetworkNone, Platform: o.Platform, Progress: o.Progress,
		Isolation: o.Isolation, Limits: o.Limits, NAT: o.NAT, Epoch: o.Epoch, Pull: o.Pull}
	out, err := b.Build(ctx, g, so)
	if err != nil {
		return nil, fmt.Errorf("sbom generator %s: %w", generator, err)
	}
	docs, err := readScanOutput(out.Image, scanLimits{each: MaxSBOMSize, total: MaxSBOMTotal, files: MaxSBOMFiles})
	if err != nil {
		return nil, fmt.Errorf("sbom generator %s: %w", generator, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("sbom generator %s wrote nothing in %s", generator, scanOut)
	}
	return docs, nil
}

// scanLimits bound what readScanOutput reads: bytes of one statement, of
// all of them, and their number.
type scanLimits struct {
	each, total int64
	files       int
}

// readScanOutput reads what the scan wrote directly in /run/out, from the
// last layer of the scan's image (the one its RUN made), within lim, as
// BuildKit unbundles it: every regular file, whatever its name, is one
// in-toto statement with an SPDX predicate, and the SBOM is that
// predicate. Symlinks, hard links and directories, wherever they point,
// are never followed, and nothing outside the layer is read.
func readScanOutput(img v1.Image, lim scanLimits) (map[string][]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) == 0 {
		return nil, errors.New("the scan made no layer")
	}
	rc, err := layers[len(layers)-1].Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	out := map[string][]byte{}
	var total int64
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		name := path.Clean("/" + h.Name)
		if path.Dir(name) != scanOut || strings.HasPrefix(path.Base(name), ".wh.") {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > lim.each {
			return nil, fmt.Errorf("%s: %d bytes, more than %d", name, h.Size, lim.each)
		}
		if total += h.Size; total > lim.total {
			return nil, fmt.Errorf("the statements in %s add up to more than %d bytes", scanOut, lim.total)
		}
		if len(out) == lim.files {
			return nil, fmt.Errorf("more than %d statements in %s", lim.files, scanOut)
		}
		pred, err := scanStatement(io.LimitReader(tr, lim.each))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[path.Base(name)] = pred
	}
}

// scanStatement decodes the one in-toto statement of r and returns its
// predicate, which must be an SPDX document.
func scanStatement(r io.Reader) ([]byte, error) {
	dec := json.NewDecoder(r)
	var st attest.Statement
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("decode in-toto statement: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not a single in-toto statement")
	}
	if st.PredicateType != attest.PredicateSPDX {
		return nil, fmt.Errorf("predicate type %q, want %s", st.PredicateType, attest.PredicateSPDX)
	}
	if len(st.Predicate) == 0 || string(st.Predicate) == "null" {
		return nil, errors.New("in-toto statement has no predicate")
	}
	return st.Predicate, nil
}

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
	// MaxSBOMSize bounds one SPDX document a scanner writes; its
	// statement (the document and the subjects) must stay within
	// attest.MaxStatementSize to be read back.
	MaxSBOMSize = attest.MaxStatementSize - 1<<20
	// MaxSBOMTotal bounds all the documents of one scan together, and
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
// BuildKit decides it: k given as a build arg, a global ARG or an ARG of
// st (the latest wins) is true, or a comma-separated list naming st.
func (j *job) sbomEnabled(k string, st *stageState) bool {
	v, ok := j.o.BuildArgs[k]
	if j.meta != nil {
		if mv, mok := j.meta.Get(k); mok {
			v, ok = mv, true
		}
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
// the SPDX JSON documents it wrote, by file name. The scan is a build of
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
		return nil, fmt.Errorf("sbom generator %s wrote no %s/*.spdx.json", generator, scanOut)
	}
	return docs, nil
}

// scanLimits bound what readScanOutput reads: bytes of one document, of
// all of them, and their number.
type scanLimits struct {
	each, total int64
	files       int
}

// readScanOutput reads the *.spdx.json files directly in /run/out from
// the last layer of the scan's image (the one its RUN made), within lim.
// Only regular files count: symlinks and hard links, wherever they point,
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
		if h.Typeflag != tar.TypeReg || path.Dir(name) != scanOut || !strings.HasSuffix(name, ".spdx.json") {
			continue
		}
		if h.Size > lim.each {
			return nil, fmt.Errorf("%s: %d bytes, more than %d", name, h.Size, lim.each)
		}
		if total += h.Size; total > lim.total {
			return nil, fmt.Errorf("the documents in %s add up to more than %d bytes", scanOut, lim.total)
		}
		if len(out) == lim.files {
			return nil, fmt.Errorf("more than %d documents in %s", lim.files, scanOut)
		}
		b, err := io.ReadAll(io.LimitReader(tr, lim.each))
		if err != nil {
			return nil, err
		}
		if !json.Valid(b) {
			return nil, fmt.Errorf("%s is not JSON", name)
		}
		out[path.Base(name)] = b
	}
}

package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/util/suggest"

	"builder/build/attest"
	"builder/build/cacheio"
	"builder/build/copier"
	"builder/build/namedctx"
	"builder/build/progress"
	"builder/build/sandbox"
	"builder/build/sandbox/cgroup"
	"builder/build/secrets"
	"builder/build/sshagent"
	"builder/build/store"
	"builder/export"
	"builder/parser"
)

// Options describe one build, as `builder build` flags give them.
type Options struct {
	ContextDir string
	Dockerfile string            // path of the Dockerfile (for <Dockerfile>.dockerignore); default ContextDir/Dockerfile
	Tags       []string          // names to tag the image with in the local store
	BuildArgs  map[string]string // --build-arg values
	Labels     map[string]string // --label values, added to the final image
	Target     string            // --target stage name; default the last stage
	NoCache    bool              // run every step even if the cache has it
	Pull       bool              // resolve base images in their registry even if stored locally
	NoPull     bool              // never contact a registry for a base image (--pull=never): a missing one is an error
	Network    string            // network mode of RUN: NetworkDefault (also for ""), NetworkNone or NetworkHost
	Platform   v1.Platform       // target platform; default the host's (linux/GOARCH)
	// Platforms are the target platforms of a multi-platform build: each
	// is built as its own graph (steps of equal keys shared), in parallel,
	// and the result is an index. Empty means Platform alone.
	Platforms []v1.Platform
	// BinfmtDir is where binfmt_misc is read to find emulators for RUN
	// steps of foreign platforms; default binfmt.Dir.
	BinfmtDir string
	Epoch     *time.Time // SOURCE_DATE_EPOCH
	Progress  *progress.Progress
	// ExplainCache prints, for every step that misses the cache, the first
	// input that differs from the last build of the same Dockerfile step.
	ExplainCache bool
	// Secrets are the --secret values RUN --mount=type=secret reads, by id.
	// Their values never reach a layer, the config, history or a cache key.
	Secrets map[string]secrets.Source
	// SSH are the --ssh agents RUN --mount=type=ssh forwards, by id. Only
	// the ids reach a cache key; sockets and keys never reach the image.
	SSH map[string]*sshagent.Agent
	// NamedContexts are the --build-context values by namedctx key: each
	// replaces the stage or image of its name for FROM, COPY --from and
	// RUN --mount from=.
	NamedContexts map[string]namedctx.Context
	// Allow lists the entitlements granted (--allow): EntitlementNetworkHost
	// permits RUN --network=host, EntitlementSecurityInsecure RUN
	// --security=insecure.
	Allow []string
	// NAT picks the NAT of the default network: nat.Pasta,
	// nat.Slirp4netns, or "" for pasta where installed, else
	// slirp4netns ($BUILDER_NAT for the command line).
	NAT string
	// Isolation of RUN (--isolation): "auto" or "" (namespaces where
	// permitted, else chroot), "namespaces" or "chroot"; see isolation.go.
	Isolation string
	// Limits bound every RUN's process tree (--memory, --cpus,
	// --pids-limit); without usable cgroups they are dropped with a warning.
	Limits cgroup.Limits
	// CacheFrom are the shared caches (--cache-from) whose records a step
	// may hit; a hit's layer is fetched only when something needs it.
	CacheFrom []cacheio.Spec
	// CacheTo are the caches (--cache-to) written after a successful
	// build; type=inline goes into the image config.
	CacheTo []cacheio.Spec
	// ExtraHosts are added to every RUN's /etc/hosts (--add-host).
	ExtraHosts []sandbox.HostEntry
	// Ulimits are every RUN's resource limits (--ulimit).
	Ulimits []sandbox.Rlimit
	// ShmSize is the size of every RUN's /dev/shm in bytes (--shm-size);
	// 0 means sandbox.DefaultShmSize.
	ShmSize int64
	// Annotations are the --annotation values by level; a single-platform
	// build refuses the index ones.
	Annotations Annotations
	// AnnotationSpecs are raw --annotation values, parsed per job platform
	// into Annotations (so TYPE[PLATFORMS]: ones reach only their platforms).
	AnnotationSpecs []string
	// StrictSyntax refuses a # syntax= frontend other than
	// docker/dockerfile:1 instead of building the file as a plain
	// Dockerfile with a warning ($BUILDER_STRICT_SYNTAX=1).
	StrictSyntax bool
	// NoCacheFilter names stages (by name or index) whose steps ignore
	// the cache (--no-cache-filter); their results are still recorded.
	NoCacheFilter []string
	// TemporaryContext says ContextDir was fetched or unpacked for this
	// build only (stdin, Git, URL): its file hashes are not remembered.
	TemporaryContext bool
	// GitContext is the repository and commit of a Git context, which
	// provenance names as its configSource; nil for other contexts.
	GitContext *attest.GitSource
}

// Result describes the image a build produced: one image, or for several
// platforms an index of one image per platform.
type Result struct {
	ManifestDigest v1.Hash // the image's, or the index's
	ConfigDigest   v1.Hash // zero for an index
	Image          v1.Image
	// Index and Images are set for a multi-platform build only: Image is
	// then nil and ManifestDigest is the index's.
	Index  v1.ImageIndex
	Images []export.PlatformImage
	// IndexAnnotations go on a multi-platform build's index (--annotation
	// index:); Images carry their manifest-descriptor ones.
	IndexAnnotations map[string]string
	// DescriptorAnnotations go on the entry of the image (one platform:
	// manifest-descriptor) or the index (several: index-descriptor) in an
	// OCI layout's index.json.
	DescriptorAnnotations map[string]string
	// Record is what the build's provenance names: its sources, steps and
	// times; nil for several platforms, where Records has each platform's
	// in the order of Images.
	Record        *attest.Record
	Records       []*attest.Record
	Tags          []string
	Steps, Cached int
	// SBOMContext is true when the SBOM scan is to include the context
	// (BUILDKIT_SBOM_SCAN_CONTEXT, see ScanSBOM); single-platform only (see
	// SBOMExtras).
	SBOMContext bool
	// SBOMStages are the images of the stages the target reads that ask
	// to be scanned too (BUILDKIT_SBOM_SCAN_STAGE), by stage name; they
	// are in the store, untagged. Single-platform only.
	SBOMStages map[string]v1.Image
	// SBOMExtras are, for several platforms, each platform's SBOMContext
	// and SBOMStages, in the order of Images.
	SBOMExtras []SBOMExtras
}

// SBOMExtras is what one platform's SBOM scan binds besides its image.
type SBOMExtras struct {
	Context bool
	Stages  map[string]v1.Image
}

// proxyArgs are the build args Docker accepts without an ARG line. They are
// visible to RUN but never written to the image or its history.
var proxyArgs = map[string]bool{
	"HTTP_PROXY": true, "http_proxy": true, "HTTPS_PROXY": true, "https_proxy": true,
	"FTP_PROXY": true, "ftp_proxy": true, "NO_PROXY": true, "no_proxy": true,
	"ALL_PROXY": true, "all_proxy": true,
}

// job is one build in progress.
type job struct {
	b        *Builder
	o        Options
	g        *parser.Graph
	bctx     *copier.Context
	meta     *vars // global args (before the first FROM), with platform args
	used     sync.Map
	stages   []*stageFuture
	runSem   chan struct{}
	progress *progress.Progress
	steps    int
	cached   int
	countMu  sync.Mutex
	errMu    sync.Mutex
	isoMu    sync.Mutex
	iso      *runIsolation // nil until a step needs it; see isolation
	netOnce  sync.Once
	net      *runNetwork // the default network's NAT, set up by the first RUN that uses it
	netErr   error
	firstErr error       // the first failure, which cancels the other stages
	label    string      // "os/arch " before step names in a multi-platform build
	emu      *emulators  // binfmt_misc handlers, shared by the build's jobs
	cio      *cacheState // --cache-from/--cache-to state; nil without them
	imagesMu sync.Mutex
	images   map[imageKey]*baseImage // images resolved so far; see image
	nctx     namedState              // named contexts resolved so far
	rec      *recorder               // what provenance will name
	// platformGiven is set when the build names its platforms (--platform):
	// the image then says the target platform whatever its base's is.
	platformGiven bool
}

type stageFuture struct {
	once sync.Once
	done chan struct{}
	st   *stageState
	err  error
}

// ReadDockerfile reads and parses the Dockerfile at path, which errors
// name by its base name. The file is read as copier.ReadDockerfile says:
// resolved inside its own directory, and only if it is a regular file.
func ReadDockerfile(path string) (*parser.Graph, error) {
	g, _, err := ReadDockerfileSource(path)
	return g, err
}

// ReadDockerfileSource is ReadDockerfile that also returns the Dockerfile's
// text, for error reports that quote it; the text comes back with a parse
// error too (nil if the file could not be read).
func ReadDockerfileSource(path string) (*parser.Graph, []byte, error) {
	dt, err := copier.ReadDockerfile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	g, err := parser.Parse(filepath.Base(path), bytes.NewReader(dt))
	return g, dt, err
}

// LintContext runs the build checks that need the build context of o
// (CopyIgnoredFile, against its .dockerignore) on g, adding to
// g.Warnings, as Build does before it starts; --check calls it alone.
func LintContext(g *parser.Graph, o Options) error {
	bctx, err := copier.LoadContext(o.ContextDir, o.Dockerfile)
	if err != nil {
		return fmt.Errorf("load build context: %w", err)
	}
	return g.LintIgnored(bctx.Ignore)
}

// DockerfilePath returns the path of the Dockerfile o names: Dockerfile,
// or by default the file Dockerfile in ContextDir (default ".").
func (o Options) DockerfilePath() string {
	if o.Dockerfile != "" {
		return o.Dockerfile
	}
	dir := o.ContextDir
	if dir == "" {
		dir = "."
	}
	return filepath.Join(dir, "Dockerfile")
}

// Build runs the build of g, the Dockerfile o.DockerfilePath() as
// ReadDockerfile parsed it, and writes the image into the store, tagged
// with o.Tags. On failure the store keeps everything committed so far,
// which a later build reuses.
func (b *Builder) Build(ctx context.Context, g *parser.Graph, o Options) (*Result, error) {
	unlock, err := b.maint.LockShared(ctx) // keeps GC (prune) out while we build
	if err != nil {
		return nil, err
	}
	defer unlock()
	if o.ContextDir == "" {
		o.ContextDir = "."
	}
	o.Dockerfile = o.DockerfilePath()
	if o.Network == "" {
		o.Network = NetworkDefault
	}
	platforms, err := targetPlatforms(o)
	if err != nil {
		return nil, err
	}
	if o.Progress == nil {
		o.Progress = progress.New(nil, progress.Quiet)
	}
	warning, err := checkSyntax(g, o.StrictSyntax)
	if err != nil {
		return nil, err
	}
	if warning != "" {
		o.Progress.Printf("WARNING: %s", warning)
	}
	bctx, err := copier.LoadContext(o.ContextDir, o.Dockerfile)
	if err != nil {
		return nil, fmt.Errorf("load build context: %w", err)
	}
	if err := g.LintIgnored(bctx.Ignore); err != nil {
		return nil, err
	}
	// Late: the base image checks add warnings after the build.
	defer func() { printLintSummary(o.Progress, g.Warnings) }()
	if err := g.LintError(); err != nil { // # check=error=true
		return nil, err
	}
	if len(platforms) == 1 {
		if err := o.Annotations.singlePlatform(); err != nil {
			return nil, err
		}
	}
	for _, p := range platforms {
		a, err := ParseAnnotations(o.AnnotationSpecs, p)
		if err != nil {
			return nil, err
		}
		if len(platforms) == 1 {
			if err := a.singlePlatform(); err != nil {
				return nil, err
			}
		}
	}
	if err := checkAnnotationPlatforms(o.AnnotationSpecs, platforms); err != nil {
		return nil, err
	}
	if err := checkHostname(o.BuildArgs[sandboxHostnameArg]); err != nil {
		return nil, err
	}
	if !o.TemporaryContext {
		if bctx.Hashes, err = copier.OpenStatCache(filepath.Join(b.root, store.ContextStatDir), bctx.Dir); err != nil {
			return nil, fmt.Errorf("load build context: %w", err)
		}
		defer func() {
			if err := bctx.Hashes.Save(); err != nil {
				o.Progress.Printf("WARNING: %v", err)
			}
		}()
	}
	for _, w := range b.TakeWarnings() {
		o.Progress.Printf("WARNING: %s", w)
	}
	// One job per platform; they share the context, the RUN slots and the
	// cache state, and the Builder runs each step key once at a time.
	runSem := make(chan struct{}, runtime.NumCPU())
	jobs := make([]*job, len(platforms))
	for i, p := range platforms {
		jo := o
		jo.Platform = p
		if len(o.AnnotationSpecs) > 0 {
			if jo.Annotations, err = ParseAnnotations(o.AnnotationSpecs, p); err != nil {
				return nil, err
			}
		}
		j := &job{b: b, o: jo, g: g, bctx: bctx, progress: o.Progress, runSem: runSem, rec: newRecorder(),
			platformGiven: len(o.Platforms) > 0 || o.Platform.OS != "" || o.Platform.Architecture != ""}
		defer j.cleanupNamed()
		if len(platforms) > 1 {
			j.label = export.PlatformString(p) + " "
		}
		if err := j.evalMetaArgs(); err != nil {
			return nil, err
		}
		// The isolation itself is decided when a step first needs it;
		// a mode given explicitly is checked against the store now.
		if err := CheckIsolation(jo.Isolation); err != nil {
			return nil, err
		}
		if err := j.checkSnapshotter(jo.Isolation); err != nil {
			return nil, err
		}
		jobs[i] = j
	}
	target, err := targetStage(g, o.Target)
	if err != nil {
		return nil, err
	}
	var stageIDs []string
	for _, s := range g.Stages {
		stageIDs = append(stageIDs, strconv.Itoa(s.Index))
		if s.Name != "" {
			stageIDs = append(stageIDs, s.Name)
		}
	}
	if err := checkNoCacheFilter(o, stageIDs); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if err := j.preflight(j.neededStages(target)); err != nil {
			return nil, err
		}
	}
	lintedBases := false
	if g.ErrorOnWarnings {
		// # check=error=true: the checks on base images must stop the
		// build before its first step too, so their configs are resolved
		// first (a base that fails to resolve fails in its stage).
		_ = jobs[0].lintBases(ctx, jobs[0].neededStages(target), jobs[0].baseConfig, false)
		lintedBases = true
		if err := g.LintError(); err != nil {
			return nil, err
		}
	}
	if err := checkEmulation(o.Progress, jobs, target); err != nil {
		return nil, err
	}
	jobs[0].startCache(ctx)
	for _, j := range jobs {
		j.cio = jobs[0].cio
		if j.cio != nil {
			j.cio.platforms = append(j.cio.platforms, j.label)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	states := make([]*stageState, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			states[i], errs[i] = j.runStages(ctx, target)
			if errs[i] != nil {
				cancel() // one platform's failure ends the build
			}
		}()
	}
	wg.Wait()
	if !lintedBases {
		// The checks on base images, on the configs the build resolved;
		// their warnings are listed after the build, even a failed one.
		n := len(g.Warnings)
		for _, j := range jobs {
			j.lintBaseWarnings(ctx, target)
		}
		g.Warnings = dedupeWarnings(g.Warnings, n)
	}
	if err := firstError(errs); err != nil {
		return nil, err
	}
	for k := range o.BuildArgs {
		used := false
		for _, j := range jobs {
			_, ok := j.used.Load(k)
			used = used || ok
		}
		// BUILDKIT_CONTEXT_KEEP_GIT_DIR is read by the CLI for the context.
		if !used && !proxyArgs[k] && k != sandboxHostnameArg && k != "BUILDKIT_CONTEXT_KEEP_GIT_DIR" && k != sbomScanContextArg && k != sbomScanStageArg {
			o.Progress.Printf("WARNING: build argument %q was not consumed by any ARG", k)
		}
	}
	var res *Result
	if len(jobs) == 1 {
		res, err = jobs[0].commitImage(ctx, states[0], true)
		if err == nil {
			res.DescriptorAnnotations = descriptorAnnotations(jobs[0].o.Annotations.ManifestDescriptor)
			res.SBOMContext = jobs[0].sbomScanContext(states[0])
			res.SBOMStages, err = jobs[0].sbomScanStages(ctx, jobs[0].neededStages(target), target)
		}
	} else {
		res, err = commitIndex(ctx, jobs, states)
		for i, j := range jobs {
			if err != nil {
				break
			}
			x := SBOMExtras{Context: j.sbomScanContext(states[i])}
			x.Stages, err = j.sbomScanStages(ctx, j.neededStages(target), target)
			res.SBOMExtras = append(res.SBOMExtras, x)
		}
	}
	if err != nil {
		return nil, err
	}
	// The jobs share one cache state: the export holds every platform's
	// records.
	if err := jobs[0].exportCaches(ctx, target); err != nil {
		return nil, err
	}
	dockerfile, _ := copier.ReadDockerfile(o.Dockerfile) // parsed already: provenance only shows it
	for _, j := range jobs {
		res.Steps += j.steps
		res.Cached += j.cached
		res.Records = append(res.Records, j.record(dockerfile, target))
	}
	if len(jobs) == 1 {
		res.Record, res.Records = res.Records[0], nil
	}
	unlock() // automatic GC needs the store to itself
	jobs[0].autoGC(ctx, res.ManifestDigest)
	return res, nil
}

// targetPlatforms returns the platforms o asks for, normalized, each once;
// by default the host's.
func targetPlatforms(o Options) ([]v1.Platform, error) {
	ps := o.Platforms
	if len(ps) == 0 {
		ps = []v1.Platform{o.Platform}
	}
	var out []v1.Platform
	seen := map[string]bool{}
	for _, p := range ps {
		if p.OS == "" && p.Architecture == "" {
			p = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		}
		p = NormalizePlatform(p)
		if p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("platform %q needs an OS and an architecture", export.PlatformString(p))
		}
		if !seen[export.PlatformString(p)] {
			seen[export.PlatformString(p)] = true
			out = append(out, p)
		}
	}
	if len(out) > MaxPlatforms {
		return nil, fmt.Errorf("%d platforms: at most %d can be built at once", len(out), MaxPlatforms)
	}
	return out, nil
}

// runStages runs the stages the target needs, independent ones in
// parallel, and returns the target's final state or the first failure.
func (j *job) runStages(ctx context.Context, target int) (*stageState, error) {
	j.stages = make([]*stageFuture, len(j.g.Stages))
	for i := range j.stages {
		j.stages[i] = &stageFuture{done: make(chan struct{})}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Start every stage the target needs at once, so independent stages run
	// in parallel; each waits for the stages it reads from.
	needed := j.neededStages(target)
	steps := 0
	for _, i := range needed {
		steps += len(j.g.Stages[i].Steps) + 1 // FROM and the steps
	}
	j.progress.Expect(steps)
	for _, i := range needed {
		j.start(ctx, cancel, i)
	}
	st, err := j.wait(ctx, target)
	if err != nil {
		j.errMu.Lock()
		first := j.firstErr
		j.errMu.Unlock()
		if first != nil {
			return nil, first
		}
		return nil, err
	}
	return st, nil
}

// firstError returns the first error of errs that is not a cancellation
// another failure caused, else the first error.
func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// printLintSummary prints the build checks' warnings after a build, as
// buildx does: a count, then one line per warning with its rule and line.
func printLintSummary(p *progress.Progress, ws []parser.Warning) {
	if len(ws) == 0 {
		return
	}
	plural := "s"
	if len(ws) == 1 {
		plural = ""
	}
	p.Printf("%d warning%s found (use builder build --check to see them with their source):", len(ws), plural)
	for _, w := range ws {
		p.Warning(linter.LintFormatShort(w.Rule, w.Message, w.Pos.Line), w.URL)
	}
}

// dedupeWarnings drops from ws the repeats of warnings the base image
// checks added (ws grew from n): each platform's job finds the same
// UndefinedVar.
func dedupeWarnings(ws []parser.Warning, n int) []parser.Warning {
	if len(ws) == n {
		return ws
	}
	seen := map[parser.Warning]bool{}
	out := ws[:0]
	for _, w := range ws {
		if seen[w] && (w.Rule == "UndefinedVar" || w.Rule == "InvalidBaseImagePlatform") {
			continue
		}
		seen[w] = true
		out = append(out, w)
	}
	return out
}

// targetStage returns the index of the stage --target names, by default
// the last.
func targetStage(g *parser.Graph, name string) (int, error) {
	if name == "" {
		return len(g.Stages) - 1, nil
	}
	s, ok := g.StageByName(name)
	if !ok {
		return 0, targetError(g, name)
	}
	return s.Index, nil
}

// targetError is the error for a --target that names no stage: with
// "did you mean" for a near miss (case-insensitive, as BuildKit), else the
// list of stages.
func targetError(g *parser.Graph, target string) error {
	err := fmt.Errorf("target stage %q could not be found", target)
	var names []string
	for _, s := range g.Stages {
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	if ok, werr := suggest.WrapErrorMaybe(err, target, names, true); ok {
		return werr
	}
	return fmt.Errorf("%w; stages: %s", err, stageNames(g))
}

func stageNames(g *parser.Graph) string {
	var names []string
	for _, s := range g.Stages {
		if s.Name != "" {
			names = append(names, s.Name)
		} else {
			names = append(names, strconv.Itoa(s.Index))
		}
	}
	return strings.Join(names, ", ")
}

// evalMetaArgs evaluates the ARGs before the first FROM, with the automatic
// platform args in scope.
func (j *job) evalMetaArgs() error {
	m := newVars()
	p := j.o.Platform
	plat := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		plat += "/" + p.Variant
	}
	hostPlat := "linux/" + runtime.GOARCH
	// TARGETSTAGE names the stage being built, as BuildKit: --target, else
	// the last stage's name, else "default".
	m.Set("TARGETSTAGE", j.o.Target)
	if j.o.Target == "" {
		m.Set("TARGETSTAGE", "default")
		if last := j.g.Stages[len(j.g.Stages)-1]; last.Name != "" {
			m.Set("TARGETSTAGE", last.Name)
		}
	}
	for k, v := range map[string]string{
		"TARGETPLATFORM": plat, "TARGETOS": p.OS, "TARGETARCH": p.Architecture, "TARGETVARIANT": p.Variant,
		"BUILDPLATFORM": hostPlat, "BUILDOS": "linux", "BUILDARCH": runtime.GOARCH, "BUILDVARIANT": "",
	} {
		m.Set(k, v)
	}
	j.meta = m // argValue reads earlier global args from j.meta
	for i, a := range j.g.MetaArgs {
		if err := j.evalMetaArg(m, a); err != nil {
			if i < len(j.g.MetaSteps) {
				st := j.g.MetaSteps[i]
				return newStepError(st.Pos, st.Original, err)
			}
			return err
		}
	}
	return nil
}

// evalMetaArg sets the global ARGs of one instruction in m, within the
// limits of one value and of all global ARGs together.
func (j *job) evalMetaArg(m *vars, a *parser.Arg) error {
	for _, kv := range a.Pairs {
		val, ok, err := j.argValue(kv, m, nil)
		if err != nil {
			return err
		}
		if err := checkValue("ARG", kv.Key, val); err != nil {
			return err
		}
		if ok {
			m.Set(kv.Key, val)
		} else {
			m.Declare(kv.Key)
		}
	}
	if envSize(m) > MaxEnvSize {
		return &LimitError{What: "the global ARGs", Limit: MaxEnvSize}
	}
	return nil
}

// argValue gives an ARG its value: the --build-arg if given, else its default
// expanded against what is in scope, else (for an ARG inside a stage) the
// global value of the same name, which includes the automatic platform args.
// A global ARG without a value keeps what scope already holds for it. ok is
// false when none of these gives a value: the ARG is declared but unset.
func (j *job) argValue(kv parser.ArgPair, scope *vars, env []string) (v string, ok bool, err error) {
	if v, ok := j.o.BuildArgs[kv.Key]; ok {
		j.used.Store(kv.Key, true)
		return v, true, nil
	}
	if kv.Value != nil {
		v, err := newExpander(j.g.Escape, env, scope).word(*kv.Value)
		return v, true, err
	}
	v, ok = j.meta.Get(kv.Key)
	return v, ok, nil
}

// neededStages lists the stages the target depends on (itself included),
// as far as they can be known before running: FROM and --from references
// whose names do not depend on stage-local args.
func (j *job) neededStages(target int) []int {
	seen := map[int]bool{}
	var visit func(i int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		s := j.g.Stages[i]
		if _, ok := j.named(s.Name); ok && s.Name != "" {
			return // a named context replaces the stage
		}
		refs := []string{s.Base}
		for _, step := range s.Steps {
			switch op := step.Op.(type) {
			case *parser.Copy:
				refs = append(refs, op.From)
			case *parser.Run:
				for _, m := range op.Mounts {
					refs = append(refs, m.From)
				}
			}
		}
		for _, r := range refs {
			if r == "" {
				continue
			}
			r, err := newExpander(j.g.Escape, nil, j.meta).word(r)
			if err != nil {
				continue
			}
			if d, ok := j.stageRef(r, i); ok {
				visit(d.Index)
			}
		}
	}
	visit(target)
	out := make([]int, 0, len(seen))
	for i := range j.g.Stages {
		if seen[i] {
			out = append(out, i)
		}
	}
	return out
}

func (j *job) start(ctx context.Context, cancel context.CancelFunc, i int) {
	f := j.stages[i]
	f.once.Do(func() {
		go func() {
			defer close(f.done)
			f.st, f.err = j.execStage(ctx, i)
			if f.err != nil {
				if !errors.Is(f.err, context.Canceled) {
					j.errMu.Lock()
					if j.firstErr == nil {
						j.firstErr = f.err
					}
					j.errMu.Unlock()
				}
				cancel()
			}
		}()
	})
}

// wait returns the final state of stage i, starting it if needed.
func (j *job) wait(ctx context.Context, i int) (*stageState, error) {
	f := j.stages[i]
	j.start(ctx, func() {}, i)
	select {
	case <-f.done:
	case <-ctx.Done():
		// Prefer the stage's own error over the cancellation it caused.
		<-f.done
	}
	return f.st, f.err
}

func (j *job) countStep(cached bool) {
	j.countMu.Lock()
	j.steps++
	if cached {
		j.cached++
	}
	j.countMu.Unlock()
}

var errNotSupported = errors.New("not supported yet")

// stageRef resolves a stage reference (COPY --from, RUN --mount from, or FROM)
// made in stage index: the latest earlier stage of that name, or an
// earlier stage's number.
func (j *job) stageRef(ref string, index int) (*parser.Stage, bool) {
	if s, ok := j.g.StageBefore(ref, index); ok {
		return s, true
	}
	if n, err := strconv.Atoi(ref); err == nil && n >= 0 && n < index {
		return j.g.Stages[n], true
	}
	return nil, false
}

// resolveFrom returns the layers a COPY --from or RUN --mount from= reads:
// an earlier stage's (waited for) or an image's. The slice is never nil, so
// an empty tree is told apart from "no from".
func (j *job) resolveFrom(ctx context.Context, st *stageState, from string) ([]layerRef, error) {
	if s, ok := j.stageRef(from, st.index); ok {
		other, err := j.wait(ctx, s.Index)
		if err != nil {
			return nil, err
		}
		return append([]layerRef{}, other.layers...), nil
	}
	if c, ok := j.named(from); ok {
		pos := j.g.Stages[st.index]
		ns, err := j.namedStageState(ctx, c, j.o.Platform, &parser.Step{Pos: pos.Pos, Original: pos.Original})
		if err != nil {
			return nil, err
		}
		return append([]layerRef{}, ns.layers...), nil
	}
	img, err := j.image(ctx, from, j.o.Platform)
	if err != nil {
		return nil, j.stageHint(err, from, st.index)
	}
	return append([]layerRef{}, img.layers...), nil
}

package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"

	"builder/build"
	"builder/build/cacheio"
	"builder/build/namedctx"
	"builder/build/progress"
	"builder/build/record"
	"builder/build/secrets"
	"builder/build/sshagent"
	"builder/export"
	"builder/export/output"
)

func runBuild(ctx context.Context, g *globals, args []string) (err error) {
	fs := newFlagSet("build", g)
	var (
		tags, buildArgs, outputs, insecure, labels         []string
		file, target, network, progFlag, iidfile, platform string
		noCache, quiet, noRecord                           bool
	)
	fs.StringArrayVarP(&tags, "tag", "t", nil, "name and optionally a tag (name:tag); may be repeated")
	fs.StringVarP(&file, "file", "f", "", "Dockerfile path (default CONTEXT/Dockerfile; - for stdin; inside the context for a remote or stdin CONTEXT)")
	fs.StringArrayVar(&buildArgs, "build-arg", nil, "set a build-time variable (KEY=VALUE, or KEY to take it from the environment)")
	fs.StringArrayVar(&labels, "label", nil, "set a label on the image (KEY=VALUE)")
	fs.StringVar(&target, "target", "", "build this stage and the stages it needs")
	fs.BoolVar(&noCache, "no-cache", false, "do not use the cache")
	explainCache := fs.Bool("explain-cache", false, "say for every cache miss which input changed since the last build of that step (the default with --progress=plain)")
	pullFlag := fs.String("pull", "missing", "when to pull base images: always (also bare --pull, true), missing (false: only those not in the local store), never (fail when one is missing)")
	fs.Lookup("pull").NoOptDefVal = "always"
	var addHosts, ulimits, annotations, noCacheFilter []string
	var shmSize string
	fs.StringArrayVar(&addHosts, "add-host", nil, "add HOST:IP to every RUN's /etc/hosts (IP host-gateway: the host, with --network host); may be repeated")
	fs.StringArrayVar(&ulimits, "ulimit", nil, "resource limit of every RUN's processes, NAME=SOFT[:HARD] (e.g. nofile=1024:2048); may be repeated")
	fs.StringVar(&shmSize, "shm-size", "", "size of every RUN's /dev/shm (default 64m)")
	fs.StringArrayVar(&annotations, "annotation", nil, "add an annotation, [TYPES:]KEY=VALUE as buildx: TYPES a comma-separated list of manifest (the default), manifest-descriptor, index (multi-platform only) or index-descriptor (multi-platform only, on its index.json entry), each with an optional [PLATFORM]; may be repeated")
	fs.StringArrayVar(&noCacheFilter, "no-cache-filter", nil, "do not use the cache for the steps of this stage (name or index); may be repeated")
	callFlag := fs.String("call", "build", "instead of building, print: check (the build checks' warnings; exit 1 if any), outline (the target's build args, secrets and ssh ids) or targets (the stages); add ,format=json for JSON")
	checkFlag := fs.Bool("check", false, "shorthand for --call check")
	fs.Bool("load", false, "load the image into the local store (always done: accepted for buildx compatibility)")
	fs.StringVar(&network, "network", "default", "network mode of RUN: default (a private network whose outbound traffic goes through pasta or slirp4netns; the host's loopback is unreachable), none, or host (also allows RUN --network=host)")
	fs.StringVar(&platform, "platform", "", "target platforms, comma-separated (e.g. linux/amd64,linux/arm64; default linux/"+hostArch()+"): more than one builds an index; foreign RUN steps need QEMU emulation (see 'builder emulators')")
	fs.StringArrayVarP(&outputs, "output", "o", nil, "output: type=image|registry|oci|docker|local|tar[,dest=PATH][,name=REF][,compression=gzip|zstd|uncompressed]..., or - for a tar on stdout")
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	var secrets, allow, sshSpecs, namedContexts []string
	fs.StringArrayVar(&secrets, "secret", nil, "secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR")
	fs.StringArrayVar(&sshSpecs, "ssh", nil, "SSH agent for RUN --mount=type=ssh: default or ID (the agent at $SSH_AUTH_SOCK), ID=SOCKET, or ID=KEYFILE[,KEYFILE...]; may be repeated")
	fs.StringArrayVar(&namedContexts, "build-context", nil, "additional build context NAME=VALUE for FROM, COPY --from and RUN --mount from=: a directory, docker-image://REF, oci-layout://PATH[:TAG][@DIGEST], or a git or https URL; may be repeated")
	fs.StringArrayVar(&allow, "allow", nil, "extra privilege to allow, comma-separated, may be repeated: network.host (for RUN --network=host), security.insecure (for RUN --security=insecure)")
	var isolation, memory string
	var cpus float64
	var pidsLimit int64
	fs.StringVar(&isolation, "isolation", "auto", "isolation of RUN: auto (namespaces where permitted, else chroot), namespaces, or chroot (for unprivileged containers; not a security boundary, needs the naive snapshotter)")
	fs.StringVarP(&memory, "memory", "m", "", "memory limit of each RUN's processes (e.g. 512m, 2g), with cgroups")
	fs.Float64Var(&cpus, "cpus", 0, "CPU limit of each RUN's processes, in CPUs (e.g. 1.5), with cgroups")
	fs.Int64Var(&pidsLimit, "pids-limit", 0, "limit on the processes and threads of each RUN, with cgroups")
	fs.StringVar(&progFlag, "progress", "auto", "progress output: auto (tty on a terminal, else plain), tty, plain, rawjson (buildx's: BuildKit SolveStatus JSON lines), json (builder's own events) or quiet (env BUILDKIT_PROGRESS)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only the image ID")
	fs.BoolVar(&noRecord, "no-record", false, "keep no record of this build (env BUILDER_NO_RECORD=1; see 'builder builds')")
	fs.StringVar(&iidfile, "iidfile", "", "write the image ID (manifest digest) to this file")
	var pushTags bool
	var metadataFile string
	fs.BoolVar(&pushTags, "push", false, "push the image to the registries of its -t tags (shorthand for -o type=registry)")
	fs.StringVar(&metadataFile, "metadata-file", "", "write the image's digests and names as JSON to this file")
	var cacheFromFlags, cacheToFlags []string
	fs.StringArrayVar(&cacheFromFlags, "cache-from", nil, "import a shared cache: type=registry,ref=REF, type=local,src=DIR, or REF (a cache or an image built with an inline cache); may be repeated")
	var af attestFlags
	fs.StringVar(&af.provenance, "provenance", "", "attach SLSA v1 provenance: true (mode=min), false, or mode=min|max[,builder-id=ID]; by default mode=min when pushing (not with BUILDX_NO_DEFAULT_ATTESTATIONS=1)")
	fs.StringVar(&af.sbom, "sbom", "", "attach SPDX SBOMs made by a scanner image with BuildKit's protocol: true (docker/buildkit-syft-scanner:stable-1), false, or generator=IMAGE")
	fs.StringArrayVar(&af.attest, "attest", nil, "attestation: type=provenance[,mode=min|max][,builder-id=ID][,disabled=true] or type=sbom[,generator=IMAGE][,disabled=true]; may be repeated")
	fs.StringVar(&af.store, "attest-store", "both", "where attestations go: index (an attestation manifest in an image index, as BuildKit), referrers (OCI 1.1 referrers of the image only) or both")
	fs.StringArrayVar(&cacheToFlags, "cache-to", nil, "export the cache: type=registry,ref=REF or type=local,dest=DIR [,mode=min|max][,compression=gzip|zstd|uncompressed][,cache-mounts=true], or type=inline")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: builder build [OPTIONS] CONTEXT\n\nCONTEXT is a directory, - (a tar archive or a Dockerfile on stdin), a Git URL\n(https://host/repo.git#ref:subdir, git://..., git@host:repo.git#ref) or an http(s) URL\nof a tarball or a Dockerfile.\n\nExamples:\n  builder build -t app .\n  builder build -t app -o type=oci,dest=app.tar .\n\nOptions:\n%s", fs.FlagUsages())
	}
	addBuildxFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		if strings.HasPrefix(err.Error(), "unknown ") {
			return flagError(err)
		}
		return usagef("%w", err)
	}
	if err := checkBuildxFlags(fs); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("builder build needs exactly one CONTEXT argument (see 'builder build --help')")
	}
	call, err := parseCall(*callFlag, *checkFlag)
	if err != nil {
		return err
	}
	o := build.Options{ContextDir: fs.Arg(0), Tags: tags, Target: target, NoCache: noCache,
		Network: network, BuildArgs: map[string]string{}, Labels: map[string]string{}, NoCacheFilter: noCacheFilter}
	switch *pullFlag {
	case "always", "true", "newer":
		o.Pull = true
	case "missing", "false":
	case "never":
		o.NoPull = true
	default:
		return usagef("--pull=%s: use always, missing or never", *pullFlag)
	}
	if err := checkContextArg(o.ContextDir); err != nil {
		return err
	}
	for _, a := range buildArgs {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			var set bool
			if v, set = os.LookupEnv(k); !set {
				continue
			}
		}
		o.BuildArgs[k] = v
	}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		o.Labels[k] = v
	}
	if platform != "" {
		ps, err := build.ParsePlatforms(platform)
		if err != nil {
			return usagef("--platform: %w", err)
		}
		o.Platform, o.Platforms = ps[0], ps
	}
	o.BinfmtDir = os.Getenv("BUILDER_BINFMT_MISC")
	if network != build.NetworkDefault && network != build.NetworkNone && network != build.NetworkHost {
		return usagef("--network %q: use default, none or host", network)
	}
	if err := runOptions(&o, addHosts, ulimits, shmSize, annotations); err != nil {
		return err
	}
	o.NAT = os.Getenv("BUILDER_NAT")
	o.StrictSyntax = os.Getenv("BUILDER_STRICT_SYNTAX") == "1"
	epoch, err := sourceDateEpoch(o.BuildArgs)
	if err != nil {
		return usagef("%w", err)
	}
	o.Epoch = epoch
	if err := secretOptions(&o, secrets, allow); err != nil {
		return err
	}
	if err := sshOptions(&o, sshSpecs); err != nil {
		return err
	}
	if err := namedContextOptions(&o, namedContexts); err != nil {
		return err
	}
	if err := cacheOptions(&o, cacheFromFlags, cacheToFlags); err != nil {
		return err
	}
	if err := isolationOptions(ctx, &o, g, isolation, memory, cpus, pidsLimit); err != nil {
		return err
	}
	var outs []output.Spec
	for _, s := range outputs {
		out, err := parseOutput(s)
		if err != nil {
			return err
		}
		outs = append(outs, out)
	}
	if pushTags {
		if len(tags) == 0 {
			return usagef("--push needs at least one -t tag")
		}
		outs = append(outs, output.Spec{Type: "registry", Push: true, Tar: true})
	}
	plan, err := parseAttest(af, pushes(outs))
	if err != nil {
		return err
	}
	if v := os.Getenv("BUILDKIT_PROGRESS"); v != "" && !fs.Changed("progress") {
		progFlag = v
	}
	mode, err := progress.ParseMode(progFlag, os.Stderr)
	if err != nil {
		return usagef("--progress: %w", err)
	}
	if quiet {
		mode = progress.Quiet
	}
	o.Progress = progress.New(os.Stderr, mode)
	build.Version = version
	// --progress=plain explains misses unless --explain-cache=false says not to.
	o.ExplainCache = *explainCache || (progFlag == "plain" && !fs.Changed("explain-cache"))
	defer o.Progress.Close()
	rc, err := g.registryClient(insecure)
	if err != nil {
		return err
	}
	b, err := g.open(rc)
	if err != nil {
		return err
	}
	start := time.Now()
	var rw *record.Writer
	var ex *output.Result
	if !noRecord && !recordOff() {
		rw = startRecord(b, g.root, &o, args)
	}
	if rw != nil {
		defer func() { finishRecord(ctx, rw, o.Progress, ex, outputs, err) }()
	}
	bctx, err := resolveContext(ctx, g, &o, file)
	if err != nil {
		return err
	}
	defer bctx.Close()
	dfPath := o.DockerfilePath()
	if rw != nil {
		if err := rw.SetInputs(fileDigest(dfPath), contextDigest(o.ContextDir)); err != nil {
			o.Progress.Printf("WARNING: %v", err)
		}
	}
	graph, src, err := build.ReadDockerfileSource(dfPath)
	if err != nil {
		return withSource(err, filepath.Base(dfPath), src)
	}
	if call.name == "check" {
		if err := build.LintContext(graph, o); err != nil {
			return err
		}
		// A base image that cannot be resolved ends the check after the
		// warnings found so far, as BuildKit's.
		call.err = withSource(b.LintBases(ctx, graph, o), filepath.Base(dfPath), src)
	}
	if call.name != "" {
		return runCall(os.Stdout, call, graph, o)
	}
	res, err := b.Build(ctx, graph, o)
	if err != nil {
		return withSource(err, filepath.Base(dfPath), src)
	}
	var atts *output.Attestations
	if res.Index == nil {
		atts, err = plan.attestations(ctx, b, o, res)
	} else {
		atts, err = plan.platformAttestations(ctx, b, o, res)
	}
	if err != nil {
		return err
	}
	exp := output.New(output.Config{Store: b.Store(), Index: b.Index(), Registry: b.Registry(),
		Scratch: filepath.Join(g.root, "tmp"), Stdout: archiveStdout, Progress: o.Progress.Line, Meter: meter(o.Progress),
		Attest: atts, IndexAnnotations: res.IndexAnnotations, DescriptorAnnotations: res.DescriptorAnnotations})
	if res.Index != nil {
		ex, err = exp.ExportPlatforms(ctx, outs, res.Images, res.Tags)
	} else {
		ex, err = exp.Export(ctx, outs, res.Image, res.Tags)
	}
	if errors.Is(err, output.ErrNoName) {
		return usagef("%w", err)
	}
	if err != nil {
		return err
	}
	if !hasImageOutput(outs) && res.Index == nil {
		// The build tagged the image in the store: its attestations go there too.
		if err := exp.AttachToStore(ctx, res.Image, res.Tags); err != nil {
			return err
		}
	} else if !hasImageOutput(outs) && len(res.Tags) > 0 {
		// The build tagged the index: with an index store, the tags now
		// name the index with the attestation manifests in it.
		r, err := exp.AttachPlatformsToStore(ctx, res.Images, res.Tags)
		if err != nil {
			return err
		}
		if r != nil && len(outs) == 0 {
			ex = r
		}
	}
	if iidfile != "" {
		if err := output.WriteIDFile(iidfile, ex); err != nil {
			return err
		}
	}
	if metadataFile != "" {
		ex.BuildRef = buildRef()
		if err := output.WriteMetadata(metadataFile, ex); err != nil {
			return err
		}
	}
	if res.Index != nil {
		for _, pi := range res.Images {
			d, _ := pi.Image.Digest()
			o.Progress.Printf("image %s %s%s", export.PlatformString(pi.Platform), d, imageSize(pi.Image))
		}
		d := res.ManifestDigest
		if atts != nil && len(atts.Platforms) > 0 && ex != nil {
			d = ex.Digest // the index that holds or names the attestations
		}
		o.Progress.Printf("index %s of %d platforms", d, len(res.Images))
	} else {
		o.Progress.Printf("image %s%s", ex.Digest, imageSize(ex.Image))
	}
	for _, t := range res.Tags {
		o.Progress.Printf("naming to %s", t)
	}
	o.Progress.Printf("%d steps, %d cached, %.2fs", res.Steps, res.Cached, time.Since(start).Seconds())
	if quiet && !toStdout(outs) {
		fmt.Println(ex.Digest)
	}
	return nil
}

// finishRecord ends a build's record with its result or error; a record
// that cannot be written costs a warning, not the build.
func finishRecord(ctx context.Context, rw *record.Writer, p *progress.Progress, ex *output.Result, outputs []string, err error) {
	res := record.Result{Err: err, Outputs: outputs}
	if err != nil {
		res.Interrupted = errors.Is(err, context.Canceled) || ctx.Err() != nil
	} else if ex != nil {
		res.Image, res.Tags = ex.Digest.String(), ex.Names
	}
	if ferr := rw.Finish(res); ferr != nil {
		p.Printf("WARNING: %v", ferr)
	}
}

// buildRef returns a new build reference in buildx's BUILDER/NODE/REF form
// for the metadata file: builder runs no builder instances, so BUILDER and
// NODE are "builder" and "local", and REF is random.
func buildRef() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "builder/local/" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// imageSize describes an image's layer count and stored size (config and
// compressed layers) for the build summary.
func imageSize(img v1.Image) string {
	m, err := img.Manifest()
	if err != nil {
		return ""
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return fmt.Sprintf(", %d layers, %s", len(m.Layers), progress.Size(n))
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH from a build arg or the environment.
func sourceDateEpoch(args map[string]string) (*time.Time, error) {
	v, ok := args["SOURCE_DATE_EPOCH"]
	if !ok {
		v, ok = os.LookupEnv("SOURCE_DATE_EPOCH")
	}
	if !ok || v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds", v)
	}
	t := time.Unix(n, 0).UTC()
	return &t, nil
}

func hostArch() string { return runtime.GOARCH }

// secretOptions puts the --secret and --allow values into o.
func secretOptions(o *build.Options, specs, allow []string) error {
	for _, s := range specs {
		id, sec, err := secrets.Parse(s)
		if err != nil {
			return usagef("--secret: %w", err)
		}
		if o.Secrets == nil {
			o.Secrets = map[string]secrets.Source{}
		}
		o.Secrets[id] = sec
	}
	var err error
	if o.Allow, err = build.ParseAllow(allow); err != nil {
		return usagef("%w", err)
	}
	return nil
}

// sshOptions puts the --ssh agents into o: sockets are checked and key
// files read now, so a bad one fails before the build starts.
func sshOptions(o *build.Options, specs []string) error {
	for _, s := range specs {
		id, a, err := sshagent.Parse(s, os.Getenv)
		if err != nil {
			return usagef("%w", err)
		}
		if _, dup := o.SSH[id]; dup {
			return usagef("--ssh %s: id given twice", id)
		}
		if o.SSH == nil {
			o.SSH = map[string]*sshagent.Agent{}
		}
		o.SSH[id] = a
	}
	return nil
}

// namedContextOptions puts the --build-context values into o.
func namedContextOptions(o *build.Options, specs []string) error {
	for _, s := range specs {
		c, err := namedctx.Parse(s)
		if err != nil {
			return usagef("%w", err)
		}
		if _, dup := o.NamedContexts[c.Key]; dup {
			return usagef("--build-context %s: name given twice", c.Name)
		}
		if o.NamedContexts == nil {
			o.NamedContexts = map[string]namedctx.Context{}
		}
		o.NamedContexts[c.Key] = c
	}
	return nil
}

// isolationOptions puts --isolation, --memory, --cpus and --pids-limit into
// o. Chroot isolation (asked for, or found by the probe) works without
// mounts only on the naive snapshotter, which it selects unless
// --snapshotter names another. The probe runs here only when its answer
// picks the snapshotter of a new store; otherwise the build probes when a
// RUN first has to run.
func isolationOptions(ctx context.Context, o *build.Options, g *globals, isolation, memory string, cpus float64, pids int64) error {
	mode := isolation
	if build.IsolationPicksSnapshotter(isolation, g.root, g.snapshotter) {
		var err error
		if mode, _, err = build.ResolveIsolation(ctx, isolation); err != nil {
			return usagef("--isolation: %w", err)
		}
	} else if err := build.CheckIsolation(isolation); err != nil {
		return usagef("--isolation: %w", err)
	}
	var err error
	if mode == build.IsolationChroot {
		switch g.snapshotter {
		case "":
			g.snapshotter = "naive"
		case "naive":
		default:
			return usagef("--isolation=chroot needs --snapshotter naive, not %s", g.snapshotter)
		}
	}
	o.Isolation = isolation
	if memory != "" {
		if o.Limits.Memory, err = build.ParseMemory(memory); err != nil {
			return usagef("--memory: %w", err)
		}
	}
	if cpus < 0 || pids < 0 {
		return usagef("--cpus and --pids-limit must not be negative")
	}
	o.Limits.CPUs, o.Limits.Pids = cpus, pids
	return nil
}

// runOptions puts --add-host, --ulimit, --shm-size and --annotation into o;
// --network must be in o already (host-gateway depends on it).
func runOptions(o *build.Options, addHosts, ulimits []string, shmSize string, annotations []string) error {
	for _, h := range addHosts {
		e, err := build.ParseAddHost(h, o.Network)
		if err != nil {
			return usagef("%w", err)
		}
		o.ExtraHosts = append(o.ExtraHosts, e)
	}
	for _, u := range ulimits {
		l, err := build.ParseUlimit(u)
		if err != nil {
			return usagef("%w", err)
		}
		o.Ulimits = append(o.Ulimits, l)
	}
	if shmSize != "" {
		n, err := build.ParseShmSize(shmSize)
		if err != nil {
			return usagef("%w", err)
		}
		o.ShmSize = n
	}
	// Validated here so a bad value is a usage error; the build parses
	// them again per platform.
	host := v1.Platform{OS: "linux", Architecture: hostArch()}
	if _, err := build.ParseAnnotations(annotations, host); err != nil {
		return usagef("%w", err)
	}
	o.AnnotationSpecs = annotations
	return nil
}

// cacheOptions puts the --cache-from and --cache-to values into o.
func cacheOptions(o *build.Options, from, to []string) error {
	for _, v := range from {
		s, err := cacheio.ParseImport(v)
		if err != nil {
			return usagef("%w", err)
		}
		o.CacheFrom = append(o.CacheFrom, s)
	}
	for _, v := range to {
		s, err := cacheio.ParseExport(v)
		if err != nil {
			return usagef("%w", err)
		}
		o.CacheTo = append(o.CacheTo, s)
	}
	return nil
}

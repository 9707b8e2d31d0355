package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/cache"
	"builder/build/copier"
	"builder/build/fetch"
	"builder/build/gitsrc"
	"builder/build/progress"
	"builder/build/sandbox"
	"builder/export"
	"builder/parser"
	"builder/snapshot"
	"builder/snapshot/archive"
)

// run executes a RUN step, or takes its result from the cache. Its mounts
// (--mount) are set up around the sandbox and never reach the layer.
func (j *job) run(ctx context.Context, st *stageState, step *parser.Step, op *parser.Run, sp *progress.Step) (bool, error) {
	if len(op.Devices) > 0 {
		return false, fmt.Errorf("RUN --device: %w", errNotSupported)
	}
	insecure := op.Security == "insecure"
	if err := j.checkEntitlements(op); err != nil {
		return false, err
	}
	argv, script, err := runArgv(st, op)
	if err != nil {
		return false, err
	}
	if err := j.checkRunPlatform(st); err != nil {
		return false, err
	}
	network, err := j.runNetworkMode(op)
	if err != nil {
		return false, err
	}
	if network != NetworkNone {
		j.rec.noteNetwork()
	}
	mounts, err := j.runMounts(ctx, st, op)
	if err != nil {
		return false, err
	}
	env := st.runEnv(proxyEnv(j.o.BuildArgs))
	c := st.cfg.Config
	// Proxy args stay out of the cache key, as in Docker: they may hold
	// credentials, and cache records are stored and exported.
	envJSON, _ := json.Marshal(st.runEnv(nil))
	pre := cache.Preimage{Parent: string(st.fsKey), Op: "run", Args: argv, State: map[string]string{
		"env": string(envJSON), "user": c.User, "workdir": c.WorkingDir, "network": network,
		// The platform whose programs run: a foreign one runs emulated.
		"platform": export.PlatformString(v1.Platform{OS: st.cfg.OS, Architecture: st.cfg.Architecture, Variant: st.cfg.Variant}),
	}}
	if len(mounts) > 0 {
		pre.State["mounts"] = mountsKey(mounts)
	}
	if script != nil {
		pre.Inputs = map[string]string{"script": script.Data}
	}
	if insecure {
		pre.State["security"] = "insecure"
	}
	j.addRunOptions(&pre)
	hostname := j.o.BuildArgs[sandboxHostnameArg] // checked by Build
	if hostname != "" {
		pre.State["hostname"] = hostname
	}
	j.addEpoch(&pre)
	key, preimage := pre.Key()
	createdBy := "RUN " + runArgsPrefix(st.args) + strings.Join(argv, " ")
	call := fsCall{step: step, sp: sp, key: key, preimage: preimage, kind: "run", createdBy: createdBy}
	return j.fsStep(ctx, st, call, func(root []snapshot.Mount) error {
		select {
		case j.runSem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-j.runSem }()
		cwd := c.WorkingDir
		if cwd == "" {
			cwd = "/"
		}
		return j.withRunMounts(ctx, mounts, script, func(extra []sandbox.Mount, secretEnv []string) error {
			runEnv := env
			for _, kv := range secretEnv {
				k, v, _ := strings.Cut(kv, "=")
				runEnv = setEnv(runEnv, k, v)
			}
			sandboxNet, nat, err := j.sandboxNetwork(ctx, network)
			if err != nil {
				return err
			}
			spec, err := j.sandboxSpec(ctx, sandbox.Spec{Root: root, Args: argv, Env: runEnv, Cwd: cwd, User: c.User,
				Hostname: hostname, Network: sandboxNet, NAT: nat, Stdout: sp, Stderr: sp, Mounts: extra, Insecure: insecure,
				ExtraHosts: j.o.ExtraHosts, Rlimits: j.o.Ulimits, ShmSize: j.o.ShmSize})
			if err != nil {
				return err
			}
			return sandbox.Run(ctx, spec)
		})
	})
}

// errHit is a shared step's run that found the record in the cache
// (another job committed it between the lookup and the run).
var errHit = errors.New("cache hit")

// sandboxHostnameArg is the build arg that sets the hostname RUN sees
// (and names in /etc/hosts), as in BuildKit.
const sandboxHostnameArg = "BUILDKIT_SANDBOX_HOSTNAME"

// checkHostname accepts a BUILDKIT_SANDBOX_HOSTNAME value: at most 64
// bytes (the kernel's limit) of letters, digits, '-', '_' and '.', so that
// it cannot add lines or names to /etc/hosts.
func checkHostname(h string) error {
	ok := len(h) <= 64
	for _, c := range h {
		ok = ok && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.')
	}
	if !ok {
		return fmt.Errorf("build arg %s=%.70q: not a hostname (at most 64 letters, digits, '-', '_' or '.')", sandboxHostnameArg, h)
	}
	return nil
}

// proxyEnv returns the proxy build args a RUN sees. As in BuildKit, a
// proxy given in one spelling (http_proxy) is also set in the other
// (HTTP_PROXY) unless that one is given too.
func proxyEnv(buildArgs map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range buildArgs {
		if proxyArgs[k] {
			out[k] = v
		}
	}
	for k, v := range buildArgs {
		if !proxyArgs[k] {
			continue
		}
		other := strings.ToLower(k)
		if other == k {
			other = strings.ToUpper(k)
		}
		if _, ok := out[other]; !ok {
			out[other] = v
		}
	}
	return out
}

// fsCall is a filesystem step whose cache key is known.
type fsCall struct {
	step            *parser.Step
	sp              *progress.Step // nil: miss explanations go to the build log
	key             cache.Key
	preimage        []byte
	files           func() map[string]string // COPY context files, for miss explanations
	kind, createdBy string
	// direct, if set, may produce the step's record without a snapshot
	// (prev: the last build's layer, as for commitLayer); it reports false
	// to have the step prepare one and run change.
	direct func(ctx context.Context, prev v1.Hash) (cache.Record, bool, error)
}

// fsStep is the shape every filesystem step shares: it looks the key up
// once, records (and with --explain-cache prints) why it missed, and on a
// hit applies the record; on a miss it prepares an active snapshot on the
// stage's layers, lets change write into it, and commits the change as a
// layer, a snapshot and a cache record. The active snapshot is removed on
// every path.
func (j *job) fsStep(ctx context.Context, st *stageState, c fsCall, change func(root []snapshot.Mount) error) (bool, error) {
	key, preimage, createdBy := c.key, c.preimage, c.createdBy
	var rec cache.Record
	hit := false
	if !j.noCacheStage(st.index) {
		rec, hit = j.lookup(key)
	}
	prevKey := j.explain(ctx, c.sp, st, c.step, key, preimage, c.files, hit)
	if hit {
		j.applyRecord(st, rec, createdBy)
		return true, nil
	}
	// Jobs of other platforms may reach the same key at the same time
	// (a FROM --platform=$BUILDPLATFORM stage): the step runs once and
	// the others take its record as a cache hit.
	rec, ran, err := j.b.steps.do(ctx, key, func() (cache.Record, error) {
		if rec, hit := j.lookup(key); hit && !j.noCacheStage(st.index) {
			return rec, errHit
		}
		if c.direct != nil {
			if rec, ok, err := c.direct(ctx, j.previousLayer(prevKey, key)); ok || err != nil {
				return rec, err
			}
		}
		parent, err := j.ensureChain(ctx, st.layers)
		if err != nil {
			return cache.Record{}, err
		}
		active := activeKey(c.kind)
		root, err := j.b.snapshotter.Prepare(ctx, active, parent)
		if err != nil {
			return cache.Record{}, fmt.Errorf("prepare snapshot: %w", err)
		}
		defer j.b.snapshotter.Remove(context.WithoutCancel(ctx), active)
		if err := change(root); err != nil {
			return cache.Record{}, err
		}
		return j.commitLayer(ctx, active, parent, key, preimage, j.previousLayer(prevKey, key), c.sp)
	})
	if errors.Is(err, errHit) { // committed meanwhile by another job
		ran, err = false, nil
	}
	if err != nil {
		return false, err
	}
	j.applyRecord(st, rec, createdBy)
	return !ran, nil
}

// runArgsPrefix is BuildKit's "|N K=V" history prefix naming the build args
// a RUN could see (proxy args excluded: they may hold credentials).
func runArgsPrefix(args *vars) string {
	var kv []string
	for _, k := range args.keys {
		if !proxyArgs[k] {
			kv = append(kv, k+"="+args.vals[k])
		}
	}
	if len(kv) == 0 {
		return ""
	}
	return "|" + strconv.Itoa(len(kv)) + " " + strings.Join(kv, " ") + " "
}

func (j *job) addEpoch(p *cache.Preimage) {
	if j.o.Epoch != nil {
		p.State["epoch"] = strconv.FormatInt(j.o.Epoch.Unix(), 10)
	}
}

// copySource is where a COPY reads from: the build context, or the layers of
// a stage or an image, mounted read-only when needed.
type copySource struct {
	src    copier.Source
	layers []layerRef // nil for the build context
}

// copy executes a COPY or ADD step, or takes its result from the cache.
// Local sources come from the context or a stage; heredoc and URL sources
// are written to a temporary directory first and copied from there.
func (j *job) copy(ctx context.Context, st *stageState, step *parser.Step, op *parser.Copy, sp *progress.Step) (bool, error) {
	ex := st.expander()
	srcs, err := ex.words(op.Sources)
	if err != nil {
		return false, err
	}
	dest, err := ex.word(op.Dest)
	if err != nil {
		return false, err
	}
	chown, err := ex.word(op.Chown)
	if err != nil {
		return false, err
	}
	chmod, err := ex.word(op.Chmod)
	if err != nil {
		return false, err
	}
	if op.Checksum != "" {
		// BuildKit's checks, in its order and words.
		if len(srcs) != 1 {
			return false, fmt.Errorf("checksum can't be specified for multiple sources")
		}
		if !fetch.IsHTTP(srcs[0]) && !gitsrc.IsGit(srcs[0]) {
			return false, fmt.Errorf("checksum requires HTTP(S) or Git sources")
		}
	}
	var local, urls []string
	for _, s := range srcs {
		switch {
		case op.Add && gitsrc.IsGit(s):
			if len(srcs) != 1 {
				return false, fmt.Errorf("ADD of a Git repository takes one source, not %d", len(srcs))
			}
			return j.addGit(ctx, st, step, op, sp, s, containerPath(st.cfg.Config.WorkingDir, dest), chown, chmod)
		case fetch.IsHTTP(s):
			if !op.Add {
				return false, fmt.Errorf("source can't be a URL for COPY")
			}
			urls = append(urls, s)
		default:
			local = append(local, s)
		}
	}
	createdBy := copyHistory(op, srcs, dest, chown, chmod)
	dest = containerPath(st.cfg.Config.WorkingDir, dest)
	inline, err := j.inlineSources(ctx, ex, op, urls)
	if err != nil {
		return false, err
	}
	defer inline.cleanup()
	var cs copySource
	if len(local) > 0 {
		if cs, err = j.copySource(ctx, st, ex, op); err != nil {
			return false, err
		}
	}
	// ADD --unpack=false copies archives as they are.
	unpack := op.Add && (op.Unpack == nil || *op.Unpack)
	req := copier.Request{Sources: local, Dest: dest, Chmod: chmod, Excludes: op.Excludes, Parents: op.Parents,
		Add: unpack, Extract: extractArchive}
	var sum string
	if len(local) > 0 {
		if sum, err = j.sourceSum(ctx, cs, req); err != nil {
			return false, err
		}
	}
	excl, _ := json.Marshal(op.Excludes)
	pre := cache.Preimage{Parent: string(st.fsKey), Op: strings.ToLower(instrName(op)), Args: append(append([]string(nil), srcs...), dest),
		State:  map[string]string{"chown": chown, "chmod": chmod, "excludes": string(excl), "parents": strconv.FormatBool(op.Parents)},
		Inputs: map[string]string{"sources": sum}}
	if len(inline.files) > 0 {
		pre.Inputs["inline"] = inline.key()
	}
	if op.Unpack != nil {
		pre.State["unpack"] = strconv.FormatBool(*op.Unpack)
	}
	j.addEpoch(&pre)
	key, preimage := pre.Key()
	call := fsCall{step: step, sp: sp, key: key, preimage: preimage, files: j.contextFiles(cs, req), kind: "copy", createdBy: createdBy}
	if len(local) > 0 && len(inline.files) == 0 {
		call.direct = func(ctx context.Context, prev v1.Hash) (cache.Record, bool, error) {
			return j.copyOnePass(ctx, st, cs, req, chown, key, preimage, prev, sp)
		}
	}
	return j.fsStep(ctx, st, call, func(mounts []snapshot.Mount) error {
		if err := inline.materialize(ctx); err != nil {
			return err
		}
		return j.withSource(ctx, cs, mounts, func(src copier.Source, dstRoot string) error {
			if err := setChown(&req, dstRoot, chown); err != nil {
				return err
			}
			if len(local) > 0 {
				if err := copier.Copy(ctx, src, dstRoot, req); err != nil {
					return err
				}
			}
			if len(inline.files) > 0 {
				isrc, ireq := inline.copyRequest(req)
				if op.Unpack != nil && *op.Unpack && len(urls) > 0 {
					ireq.Add, ireq.Extract = true, extractArchive
				}
				return copier.Copy(ctx, isrc, dstRoot, ireq)
			}
			return nil
		})
	})
}

// copyHistory is the created_by of a COPY or ADD as BuildKit writes it:
// the instruction, --parents, --chown and --chmod, the expanded sources,
// the heredoc sources as "<<NAME" and the destination as written (not
// joined with WORKDIR). Other flags, --from among them, are left out.
func copyHistory(op *parser.Copy, srcs []string, dest, chown, chmod string) string {
	parts := []string{instrName(op)}
	if op.Parents {
		parts = append(parts, "--parents")
	}
	if chown != "" {
		parts = append(parts, "--chown="+chown)
	}
	if chmod != "" {
		parts = append(parts, "--chmod="+chmod)
	}
	parts = append(parts, srcs...)
	for _, h := range op.Heredocs {
		parts = append(parts, "<<"+h.Name)
	}
	return strings.Join(append(parts, dest), " ")
}

// setChown sets req.Chown from a --chown value ("" for none), names
// resolved in the destination root's /etc/passwd and /etc/group.
func setChown(req *copier.Request, dstRoot, chown string) error {
	if chown == "" {
		return nil
	}
	owner, err := copier.ResolveOwner(dstRoot, chown)
	if err != nil {
		return err
	}
	req.Chown = owner
	return nil
}

func instrName(op *parser.Copy) string {
	if op.Add {
		return "ADD"
	}
	return "COPY"
}

// containerPath joins a destination with the working directory, keeping a
// trailing slash (which means "a directory") as Docker does.
func containerPath(wd, p string) string {
	dir := strings.HasSuffix(p, "/") || p == "." || strings.HasSuffix(p, "/.")
	if !path.IsAbs(p) {
		if wd == "" {
			wd = "/"
		}
		p = path.Join(wd, p)
	}
	p = path.Clean(p)
	if dir && p != "/" {
		p += "/"
	}
	return p
}

// copySource resolves COPY --from into a source.
func (j *job) copySource(ctx context.Context, st *stageState, ex *expander, op *parser.Copy) (copySource, error) {
	if op.From == "" {
		return copySource{src: j.bctx.Source()}, nil
	}
	from, err := ex.word(op.From)
	if err != nil {
		return copySource{}, err
	}
	if bc, ok, err := j.namedDirFor(ctx, st, from); ok || err != nil {
		if err != nil {
			return copySource{}, err
		}
		return copySource{src: bc.Source()}, nil
	}
	layers, err := j.resolveFrom(ctx, st, from)
	if err != nil {
		return copySource{}, err
	}
	return copySource{layers: layers}, nil
}

// sourceSum is the checksum of a COPY's local sources, the input of its
// cache key. For a stage or image source it is remembered under the
// source's chain ID (a content address of its whole tree) and the request,
// so that later builds, and builds importing this one's cache, key the step
// without fetching and unpacking the source: a cached multi-stage build
// never downloads its builder stage's layers.
func (j *job) sourceSum(ctx context.Context, cs copySource, req copier.Request) (string, error) {
	if cs.layers == nil {
		return copier.Checksum(ctx, cs.src, req)
	}
	rk, err := copier.RequestKey(cs.src, req)
	if err != nil {
		return "", err
	}
	mk := sumKey(chainOf(cs.layers), rk)
	if sum, ok := j.b.cache.GetSum(mk); ok {
		j.noteSum(mk, sum)
		return sum, nil
	}
	if sum, ok := j.importedSum(mk); ok {
		_ = j.b.cache.PutSum(mk, sum) // best effort: the next build finds it locally
		j.noteSum(mk, sum)
		return sum, nil
	}
	var sum string
	err = j.withSource(ctx, cs, nil, func(src copier.Source, _ string) error {
		var err error
		sum, err = copier.Checksum(ctx, src, req)
		return err
	})
	if err != nil {
		return "", err
	}
	_ = j.b.cache.PutSum(mk, sum) // best effort: without it the next build reads the files again
	j.noteSum(mk, sum)
	return sum, nil
}

// sumKey is the memo key of a source checksum: the hex sha256 of the
// source tree's chain ID ("" for an empty tree) and copier.RequestKey.
func sumKey(chain, requestKey string) string {
	h := sha256.Sum256([]byte("builder.copysum.v2\x00" + chain + "\x00" + requestKey))
	return hex.EncodeToString(h[:])
}

// withSource runs fn with the destination snapshot (if dst is non-nil) and a
// stage or image source mounted. fn runs on a thread whose private mount
// namespace holds the mounts: it must do its file work on that goroutine.
func (j *job) withSource(ctx context.Context, cs copySource, dst []snapshot.Mount, fn func(src copier.Source, dstRoot string) error) error {
	sets := [][]snapshot.Mount{}
	if dst != nil {
		sets = append(sets, dst)
	}
	if cs.layers != nil {
		chain, err := j.ensureChain(ctx, cs.layers)
		if err != nil {
			return err
		}
		if chain == "" {
			// An empty stage: nothing to copy from; an empty directory serves.
			dir, err := os.MkdirTemp("", "builder-empty-")
			if err != nil {
				return err
			}
			defer os.Remove(dir)
			cs.src = copier.Source{Root: dir}
		} else {
			view, err := j.b.snapshotter.View(ctx, chain)
			if err != nil {
				return fmt.Errorf("view snapshot: %w", err)
			}
			sets = append(sets, view)
		}
	}
	if len(sets) == 0 {
		return fn(cs.src, "")
	}
	return j.withMounts(ctx, sets, func(roots []string) error {
		src := cs.src
		dstRoot := ""
		if dst != nil {
			dstRoot = roots[0]
			roots = roots[1:]
		}
		if len(roots) > 0 {
			src = copier.Source{Root: roots[0]}
		}
		return fn(src, dstRoot)
	})
}

// extractArchive unpacks an ADD archive into dir, safely inside it.
func extractArchive(dir string, r io.Reader) error {
	_, err := archive.Apply(dir, r)
	return err
}

// mkdirWorkdir creates the WORKDIR in the stage's filesystem, as BuildKit
// does, or takes the result from the cache.
func (j *job) mkdirWorkdir(ctx context.Context, st *stageState, step *parser.Step, sp *progress.Step) (bool, error) {
	wd := st.cfg.Config.WorkingDir
	pre := cache.Preimage{Parent: string(st.fsKey), Op: "mkdir", Args: []string{wd}, State: map[string]string{}}
	user := st.cfg.Config.User
	if user != "" {
		pre.State["user"] = user // new directories belong to USER
	}
	j.addEpoch(&pre)
	key, preimage := pre.Key()
	createdBy := "WORKDIR " + wd
	call := fsCall{step: step, sp: sp, key: key, preimage: preimage, kind: "mkdir", createdBy: createdBy}
	return j.fsStep(ctx, st, call, func(mounts []snapshot.Mount) error {
		err := j.withMounts(ctx, [][]snapshot.Mount{mounts}, func(roots []string) error {
			// As in BuildKit, the directories WORKDIR creates belong to
			// USER (resolved like COPY --chown; root when not found).
			var owner *copier.Owner
			if user != "" {
				owner, _ = copier.ResolveOwner(roots[0], user)
			}
			return copier.MkdirAll(roots[0], wd, owner)
		})
		if err != nil {
			return fmt.Errorf("create workdir: %w", err)
		}
		return nil
	})
}

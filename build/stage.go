package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/buildkit/util/suggest"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/cache"
	"builder/build/progress"
	"builder/parser"
)

// layerRef is one layer of an image being built.
type layerRef struct {
	DiffID    v1.Hash
	Digest    v1.Hash
	Size      int64
	MediaType string
}

// stageState is the image a stage has built so far.
type stageState struct {
	cfg     v1.ConfigFile
	layers  []layerRef
	fsKey   cache.Key // cache key of the filesystem state
	metaKey cache.Key // the metadata steps so far, chained (metaCached)
	created time.Time // creation time of the newest layer, for metadata-only history
	args    *vars     // build args declared in this stage
	cmdSet  bool      // CMD given in this stage (ENTRYPOINT then keeps it)
	name    string    // stage name for progress
	index   int       // stage index in the graph
	escape  rune
	// healthStart is HEALTHCHECK --start-interval, which v1.HealthConfig
	// lacks; commitImage writes it into the config.
	healthStart time.Duration
	// fromStage is 1 + the index of the earlier stage FROM built on, 0
	// when FROM named an image or scratch.
	fromStage int
	// cfgSize is the running size of cfg as JSON: measured when the stage
	// starts, then grown by every step (see checkConfig).
	cfgSize int
}

func (s *stageState) clone() *stageState {
	c := *s
	dt, _ := json.Marshal(s.cfg)
	c.cfg = v1.ConfigFile{}
	_ = json.Unmarshal(dt, &c.cfg)
	c.layers = append([]layerRef(nil), s.layers...)
	c.args = newVars()
	c.cmdSet = false
	return &c
}

// diffIDs returns the layer diff IDs, for chain IDs.
func (s *stageState) diffIDs() []v1.Hash {
	out := make([]v1.Hash, len(s.layers))
	for i, l := range s.layers {
		out[i] = l.DiffID
	}
	return out
}

// expander returns an expander over the stage's env and args.
func (s *stageState) expander() *expander {
	return newExpander(s.escape, s.cfg.Config.Env, s.args)
}

// runEnv is the environment a RUN sees: the image env, then build args in
// scope that the env does not set.
func (s *stageState) runEnv(extra map[string]string) []string {
	env := append([]string(nil), s.cfg.Config.Env...)
	have := envVars(env)
	for _, k := range s.args.keys {
		if _, ok := have.Get(k); !ok && !s.args.unset[k] {
			env = append(env, k+"="+s.args.vals[k])
		}
	}
	for _, k := range sortedKeys(extra) {
		if _, ok := have.Get(k); !ok {
			env = append(env, k+"="+extra[k])
		}
	}
	return env
}

// addHistory records a step in the image history.
func (s *stageState) addHistory(createdBy string, empty bool, created time.Time) {
	h := v1.History{
		Created:    v1.Time{Time: created},
		CreatedBy:  createdBy,
		Comment:    "builder.dockerfile.v0",
		EmptyLayer: empty,
	}
	s.cfg.History = append(s.cfg.History, h)
	if dt, err := json.Marshal(h); err == nil {
		s.growConfig(len(dt) + 1)
	}
}

// execStage builds one stage: its base, ONBUILD triggers, then its steps.
func (j *job) execStage(ctx context.Context, i int) (*stageState, error) {
	s := j.g.Stages[i]
	name := s.Name
	if name == "" {
		name = "stage-" + strconv.Itoa(i)
	}
	total := len(s.Steps) + 1
	header := func(n int, text string) string {
		return fmt.Sprintf("[%s%s %d/%d] %s", j.label, name, n, total, oneLine(text))
	}
	fromStep := j.progress.Step(header(1, s.Original))
	nc, override := j.named(s.Name)
	override = override && s.Name != ""
	var st *stageState
	var err error
	if override {
		// The named context is the stage: its instructions do not run.
		st, err = j.namedStageState(ctx, nc, j.o.Platform, &parser.Step{Pos: s.Pos, Original: s.Original})
	} else {
		st, err = j.fromBase(ctx, s)
	}
	if err != nil {
		err = newStepError(s.Pos, s.Original, err)
		fromStep.Error(err)
		return nil, err
	}
	fromStep.Done()
	st.name = name
	st.index = i
	j.rec.noteStep(st, s.Pos, s.Original, st.fromStage-1)
	st.escape = j.g.Escape
	st.measureConfig()
	if override {
		return st, nil
	}

	steps := s.Steps
	if triggers := st.cfg.Config.OnBuild; len(triggers) > 0 {
		var pre []*parser.Step
		for _, t := range triggers {
			step, err := parser.ParseOnbuild(t, s.Pos)
			if err != nil {
				return nil, newStepError(s.Pos, "ONBUILD "+t, err)
			}
			pre = append(pre, step)
		}
		st.cfg.Config.OnBuild = nil
		steps = append(pre, steps...)
		total += len(pre)
		j.progress.Expect(len(pre))
	}
	ran := false // whether a filesystem step of this stage had to run
	hit := false // whether one came from the cache
	// Metadata steps (ENV, ARG, LABEL…) cost nothing: one counts as cached
	// when nothing before it in the stage ran and either the last build of
	// the step left the same state, or a filesystem step of the stage came
	// from the cache. Without either it waits for the next filesystem step
	// of the stage: cached if that one is, as with an imported cache.
	var waiting []*progress.Step
	settle := func(cached bool) {
		for _, sp := range waiting {
			j.finishStep(sp, cached)
		}
		waiting = nil
	}
	defer settle(false)
	prev := fromStep
	for n, step := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sp := j.progress.StepAfter(prev, header(n+2, step.Original))
		prev = sp
		cached, err := j.dispatch(ctx, st, step, sp)
		if err == nil {
			err = st.checkConfig()
		}
		if err != nil {
			var se *StepError
			if !errors.As(err, &se) {
				se = newStepError(step.Pos, step.Original, err)
				if ExitCode(err) != 0 {
					se.Output = sp.Tail()
				}
			}
			settle(false) // the metadata steps before it did their part
			sp.Error(se.Step.Err)
			return nil, se
		}
		j.rec.noteStep(st, step.Pos, step.Original, -1)
		fsStep := false
		switch step.Op.(type) {
		case *parser.Run, *parser.Copy:
			fsStep = true
		case *parser.Workdir:
			fsStep = st.cfg.Config.WorkingDir != "/" // WORKDIR / creates nothing
		}
		if fsStep {
			ran = ran || !cached
			hit = hit || cached
			settle(cached && !ran)
		} else {
			same := j.metaCached(st, step) // records the state either way
			if !ran && !same && !hit {
				waiting = append(waiting, sp)
				continue
			}
			cached = !ran
		}
		j.finishStep(sp, cached)
	}
	return st, nil
}

// finishStep counts a step and ends its progress as cached or done.
func (j *job) finishStep(sp *progress.Step, cached bool) {
	j.countStep(cached)
	if cached {
		sp.Cached()
	} else {
		sp.Done()
	}
}

// metaCached reports whether a metadata step (ARG, ENV, SHELL, LABEL…)
// leaves the stage as the last build of the same Dockerfile step left it:
// the same filesystem state, the same metadata steps since, and args. It records the
// state, as a hash in the explain index, for the next build; on a first
// build there is no record and it reports false.
func (j *job) metaCached(st *stageState, step *parser.Step) bool {
	// The state is chained from the filesystem state, the metadata steps
	// before and this one's text, and the args; hashed as streamed, without
	// copies, as ENV and ARG values may be large.
	h := sha256.New()
	io.WriteString(h, "builder.meta.v1\x00"+string(st.fsKey)+"\x00"+string(st.metaKey)+"\x00")
	io.WriteString(h, step.Original)
	for _, k := range st.args.Keys() {
		v, _ := st.args.Get(k)
		fmt.Fprintf(h, "\x00%d:%d:", len(k), len(v))
		io.WriteString(h, k)
		io.WriteString(h, v)
	}
	key := cache.Key("sha256:" + hex.EncodeToString(h.Sum(nil)))
	st.metaKey = key
	id := j.stepID(st, step, "meta")
	if prev, ok := j.b.cache.LastStep(id); ok && prev.Key == key && prev.Text == step.Original {
		return true
	}
	j.b.cache.SaveStep(id, cache.Step{Key: key, Text: step.Original})
	return false
}

// fromBase makes the starting state of a stage from its FROM line.
func (j *job) fromBase(ctx context.Context, s *parser.Stage) (*stageState, error) {
	base, err := newExpander(j.g.Escape, nil, j.meta).word(s.Base)
	if err != nil {
		return nil, err
	}
	if base == "" {
		return nil, fmt.Errorf("base name (%s) should not be blank", s.Base)
	}
	if d, ok := j.g.StageBefore(base, s.Index); ok {
		parent, err := j.wait(ctx, d.Index)
		if err != nil {
			return nil, err
		}
		c := parent.clone()
		c.fromStage = d.Index + 1
		return c, nil
	}
	platform := j.o.Platform
	if s.Platform != "" {
		// FROM --platform, expanded with the global and platform args.
		ps, err := newExpander(j.g.Escape, nil, j.meta).word(s.Platform)
		if err != nil {
			return nil, err
		}
		p, err := parsePlatform(ps)
		if err != nil {
			return nil, fmt.Errorf("invalid platform in FROM --platform: %w", err)
		}
		platform = p
	}
	if strings.EqualFold(base, "scratch") {
		return scratchState(platform), nil
	}
	if c, ok := j.named(base); ok {
		return j.namedStageState(ctx, c, platform, &parser.Step{Pos: s.Pos, Original: s.Original})
	}
	img, err := j.image(ctx, base, platform)
	if err != nil {
		return nil, j.stageHint(err, base, s.Index)
	}
	// A single-platform image of another platform is used anyway: the
	// base image checks after the build warn (InvalidBaseImagePlatform).
	return stateFromImage(img)
}

// scratchState is the state of FROM scratch: no layers, Docker's PATH,
// WorkingDir / (as BuildKit's empty image).
func scratchState(platform v1.Platform) *stageState {
	st := &stageState{args: newVars(), fsKey: cache.Key("scratch")}
	st.cfg.OS = platform.OS
	st.cfg.Architecture = platform.Architecture
	st.cfg.Variant = platform.Variant
	st.cfg.Config.Env = []string{"PATH=" + defaultPath}
	st.cfg.Config.WorkingDir = "/" // as BuildKit's empty image
	st.created = time.Unix(0, 0).UTC()
	return st
}

// stageHint adds "did you mean <stage>?" to the error of an image that could
// not be resolved when its name is a near miss of a stage defined before
// index, or else, for a bare name, lists those stages: a typo in FROM or
// --from otherwise reads as a registry failure.
// The image is still tried first, as Docker does: it may exist.
func (j *job) stageHint(err error, name string, index int) error {
	var names []string
	for _, s := range j.g.Stages[:index] {
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	// Compare the repository's last component: "biulder", "biulder:latest"
	// and "registry:5000/biulder" are all near misses of "builder".
	short := name[strings.LastIndex(name, "/")+1:]
	if i := strings.IndexAny(short, ":@"); i >= 0 {
		short = short[:i]
	}
	if ok, werr := suggest.WrapErrorMaybe(err, short, names, false); ok {
		return werr
	}
	if len(names) > 0 && !strings.ContainsAny(name, "/:@.") {
		// A bare name that is no image may have been meant as a stage.
		return fmt.Errorf("%w (not a stage either; stages before this one: %s)", err, strings.Join(names, ", "))
	}
	return err
}

// defaultPath is the PATH Docker gives a container whose image sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func stateFromImage(img *baseImage) (*stageState, error) {
	st := &stageState{args: newVars(), fsKey: cache.Key("image:" + img.configDigest.String())}
	cfg := *img.config
	cfg.Config.Env = append([]string(nil), cfg.Config.Env...)
	st.cfg = cfg
	st.layers = append([]layerRef(nil), img.layers...)
	st.created = cfg.Created.Time
	st.healthStart = img.healthStart
	if len(cfg.Config.Env) == 0 {
		st.cfg.Config.Env = []string{"PATH=" + defaultPath}
	}
	return st, nil
}

// dispatch runs one step and reports whether it came from the cache.
func (j *job) dispatch(ctx context.Context, st *stageState, step *parser.Step, sp *progress.Step) (bool, error) {
	ex := st.expander()
	c := &st.cfg.Config
	switch op := step.Op.(type) {
	case *parser.Run:
		return j.run(ctx, st, step, op, sp)
	case *parser.Copy:
		return j.copy(ctx, st, step, op, sp)
	case *parser.Workdir:
		p, err := ex.word(op.Path)
		if err != nil {
			return false, err
		}
		if !path.IsAbs(p) {
			wd := c.WorkingDir
			if wd == "" {
				wd = "/"
			}
			p = path.Join(wd, p)
		}
		c.WorkingDir = path.Clean(p)
		st.growConfig(jsonLen(c.WorkingDir))
		if c.WorkingDir == "/" { // nothing to create: no layer, as in BuildKit
			j.metaHistory(st, "WORKDIR /")
			return false, nil
		}
		return j.mkdirWorkdir(ctx, st, step, sp)
	case *parser.Env:
		pairs, err := ex.pairs(op.Pairs)
		if err != nil {
			return false, err
		}
		env := c.Env
		for _, kv := range pairs {
			if err := checkValue("ENV", kv.Key, kv.Value); err != nil {
				return false, err
			}
			if old, ok := lookupEnv(env, kv.Key); ok {
				st.growConfig(-jsonLen(old) - 1)
			}
			st.growConfig(jsonLen(kv.Key+"="+kv.Value) + 1)
			env = setEnv(env, kv.Key, kv.Value)
		}
		c.Env = env
		if err := st.checkEnv(); err != nil {
			return false, err
		}
		j.metaHistory(st, "ENV "+joinPairs(pairs))
	case *parser.Arg:
		var commits []string
		for _, kv := range op.Pairs {
			v, ok, err := j.argValue(kv, st.args, c.Env)
			if err != nil {
				return false, err
			}
			if err := checkValue("ARG", kv.Key, v); err != nil {
				return false, err
			}
			commit := kv.Key
			if ok {
				st.args.Set(kv.Key, v)
				commit += "=" + v
			} else {
				st.args.Declare(kv.Key)
			}
			commits = append(commits, commit)
		}
		if err := st.checkEnv(); err != nil {
			return false, err
		}
		// BuildKit records every ARG of a stage, with the value it took.
		j.metaHistory(st, "ARG "+strings.Join(commits, " "))
	case *parser.Label:
		pairs, err := ex.pairs(op.Pairs)
		if err != nil {
			return false, err
		}
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for _, kv := range pairs {
			if err := checkValue("LABEL", kv.Key, kv.Value); err != nil {
				return false, err
			}
			if old, ok := c.Labels[kv.Key]; ok {
				st.growConfig(-jsonLen(kv.Key) - jsonLen(old) - 2)
			}
			st.growConfig(jsonLen(kv.Key) + jsonLen(kv.Value) + 2)
			c.Labels[kv.Key] = kv.Value
		}
		j.metaHistory(st, "LABEL "+joinPairs(pairs))
	case *parser.Expose:
		ports, err := ex.fields(op.Ports)
		if err != nil {
			return false, err
		}
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		var all []string
		for _, p := range ports {
			specs, err := portSpecs(p)
			if err != nil {
				return false, err
			}
			for _, s := range specs {
				c.ExposedPorts[s] = struct{}{}
				st.growConfig(jsonLen(s) + 4) // "s":{},
			}
			all = append(all, specs...)
		}
		j.metaHistory(st, fmt.Sprintf("EXPOSE %v", all))
	case *parser.Volume:
		vols, err := ex.words(op.Paths)
		if err != nil {
			return false, err
		}
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		for _, v := range vols {
			if strings.TrimSpace(v) == "" {
				return false, fmt.Errorf("VOLUME specified can not be an empty string")
			}
			c.Volumes[v] = struct{}{}
			st.growConfig(jsonLen(v) + 4)
		}
		j.metaHistory(st, fmt.Sprintf("VOLUME %v", vols))
	case *parser.User:
		u, err := ex.word(op.User)
		if err != nil {
			return false, err
		}
		c.User = u
		st.growConfig(jsonLen(u))
		j.metaHistory(st, "USER "+u)
	case *parser.Shell:
		c.Shell = append([]string(nil), op.Shell...)
		st.growConfig(jsonListLen(c.Shell))
		j.metaHistory(st, fmt.Sprintf("SHELL %v", c.Shell))
	case *parser.Cmd:
		c.Cmd = st.commandLine(op.Command, op.PrependShell)
		st.growConfig(jsonListLen(c.Cmd))
		c.ArgsEscaped = true // as BuildKit sets it, for Docker's image spec
		st.cmdSet = true
		j.metaHistory(st, fmt.Sprintf("CMD %q", c.Cmd))
	case *parser.Entrypoint:
		c.Entrypoint = st.commandLine(op.Command, op.PrependShell)
		st.growConfig(jsonListLen(c.Entrypoint))
		c.ArgsEscaped = true
		if !st.cmdSet {
			c.Cmd = nil
		}
		j.metaHistory(st, fmt.Sprintf("ENTRYPOINT %q", c.Entrypoint))
	case *parser.Healthcheck:
		c.Healthcheck = &v1.HealthConfig{Test: op.Test, Interval: op.Interval, Timeout: op.Timeout,
			StartPeriod: op.StartPeriod, Retries: op.Retries}
		st.healthStart = op.StartInterval
		st.growConfig(jsonListLen(op.Test) + 100) // the test and four numbers
		j.metaHistory(st, fmt.Sprintf("HEALTHCHECK {Test:%v Interval:%v Timeout:%v StartPeriod:%v StartInterval:%v Retries:%d}",
			op.Test, op.Interval, op.Timeout, op.StartPeriod, op.StartInterval, op.Retries))
	case *parser.StopSignal:
		s, err := ex.word(op.Signal)
		if err != nil {
			return false, err
		}
		c.StopSignal = s
		st.growConfig(jsonLen(s))
		j.metaHistory(st, "STOPSIGNAL "+s)
	case *parser.Onbuild:
		c.OnBuild = append(c.OnBuild, op.Expression) // no history, as in BuildKit
		st.growConfig(jsonLen(op.Expression) + 1)
	case *parser.Maintainer:
		st.cfg.Author = op.Name
		st.growConfig(jsonLen(op.Name))
		j.metaHistory(st, "MAINTAINER "+op.Name)
	default:
		return false, fmt.Errorf("instruction %T: %w", op, errNotSupported)
	}
	return false, nil
}

// commandLine turns CMD/ENTRYPOINT words into the argv Docker stores.
func (s *stageState) commandLine(cmd []string, prependShell bool) []string {
	if !prependShell {
		return append([]string{}, cmd...)
	}
	return append(s.shell(), strings.Join(cmd, " "))
}

// shell is the stage's SHELL, or Docker's default.
func (s *stageState) shell() []string {
	if len(s.cfg.Config.Shell) > 0 {
		return append([]string(nil), s.cfg.Config.Shell...)
	}
	return []string{"/bin/sh", "-c"}
}

// metaHistory records a metadata-only step in the history. createdBy is
// what BuildKit writes: the instruction with its values expanded, lists in
// Go's %v or %q form.
func (j *job) metaHistory(st *stageState, createdBy string) {
	st.addHistory(createdBy, true, j.stepTime(st.created))
}

// joinPairs formats expanded ENV or LABEL pairs as BuildKit's history does:
// "K=V K2=V2", unquoted.
func joinPairs(pairs []parser.KeyValue) string {
	out := make([]string, len(pairs))
	for i, kv := range pairs {
		out[i] = kv.Key + "=" + kv.Value
	}
	return strings.Join(out, " ")
}

// historyText is a step's source text on one line.
func historyText(original string) string {
	return strings.Join(strings.Fields(original), " ")
}

// stepTime is the time recorded for a step: SOURCE_DATE_EPOCH if set.
func (j *job) stepTime(t time.Time) time.Time {
	if j.o.Epoch != nil {
		return j.o.Epoch.UTC()
	}
	return t.UTC()
}

// portSpecs expands an EXPOSE word ("80", "53/udp", "8000-8002/tcp").
func portSpecs(p string) ([]string, error) {
	port, proto, ok := strings.Cut(p, "/")
	if !ok {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return nil, fmt.Errorf("invalid proto: %s", proto)
	}
	lo, hi, isRange := strings.Cut(port, "-")
	a, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid containerPort: %s", port)
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a {
			return nil, fmt.Errorf("invalid containerPort: %s", port)
		}
	}
	var out []string
	for x := a; x <= b; x++ {
		out = append(out, fmt.Sprintf("%d/%s", x, proto))
	}
	sort.Strings(out)
	return out, nil
}

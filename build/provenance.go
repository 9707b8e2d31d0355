package build

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/attest"
	"builder/build/gitsrc"
	"builder/parser"
)

// Version is builder's version, recorded in provenance; cmd/builder sets
// it from its link-time version.
var Version = "dev"

// recorder collects, while a build runs, what its provenance names: the
// images, URLs and secrets it used and the steps of every stage. Stages
// run concurrently, so every method locks. The note methods of a nil
// recorder do nothing.
type recorder struct {
	mu      sync.Mutex
	started time.Time
	images  []attest.ImageSource
	http    []attest.HTTPSource
	git     []attest.GitSource // ADD git sources
	secrets []attest.IDRef
	ssh     []attest.IDRef
	network bool
	stages  map[int][]stepNote // by stage index
}

// stepNote is one instruction of a stage and the layers it left.
type stepNote struct {
	pos    parser.Pos
	text   string
	from   int // for a FROM of an earlier stage: its index; else -1
	layers []layerRef
}

func newRecorder() *recorder {
	return &recorder{started: time.Now(), stages: map[int][]stepNote{}}
}

func (r *recorder) noteImage(ref string, p v1.Platform, d v1.Hash) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, im := range r.images {
		if im.Ref == ref && im.Digest == d && platformString(im.Platform) == platformString(p) {
			return
		}
	}
	r.images = append(r.images, attest.ImageSource{Ref: ref, Platform: p, Digest: d})
}

func (r *recorder) noteHTTP(url, digest string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.http = append(r.http, attest.HTTPSource{URL: url, Digest: digest})
}

// gitProvenanceURI names an ADD git source as BuildKit v0.26's provenance
// does (source/git/identifier.go, Capture): the remote URL, then "#ref"
// when the source names a ref; the subdirectory is not part of it.
func gitProvenanceURI(r gitsrc.Ref) string {
	u := gitsrc.Redact(r.Remote)
	if r.Ref != "" {
		u += "#" + r.Ref
	}
	return u
}

// noteGit records a git repository ADD read and the commit it resolved.
func (r *recorder) noteGit(url, commit string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.git = append(r.git, attest.GitSource{URL: url, Commit: commit})
}

func (r *recorder) noteSecret(id string, required bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets = append(r.secrets, attest.IDRef{ID: id, Optional: !required})
}

func (r *recorder) noteNetwork() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.network = true
}

// noteStep records the state stage st reached after the instruction at
// pos; from is the earlier stage a FROM builds on, or -1.
func (r *recorder) noteStep(st *stageState, pos parser.Pos, text string, from int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stages[st.index] = append(r.stages[st.index], stepNote{pos: pos, text: text, from: from,
		layers: slices.Clone(st.layers)})
}

// record returns the build's attest.Record: the job's options, the
// Dockerfile and what was noted, the steps numbered stage by stage.
func (j *job) record(dockerfile []byte, target int) *attest.Record {
	r := j.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := &attest.Record{
		DockerfileName:  j.o.Dockerfile,
		Dockerfile:      dockerfile,
		Target:          j.o.Target,
		NoCache:         j.o.NoCache,
		Args:            j.o.BuildArgs,
		Labels:          j.o.Labels,
		Secrets:         slices.Clone(r.secrets),
		SSH:             slices.Clone(r.ssh),
		Images:          slices.Clone(r.images),
		HTTP:            slices.Clone(r.http),
		Git:             slices.Clone(r.git),
		Context:         j.o.GitContext,
		Platform:        j.o.Platform,
		BuilderPlatform: "linux/" + runtime.GOARCH,
		BuilderVersion:  Version,
		InvocationID:    attest.NewInvocationID(),
		Started:         r.started,
		Finished:        time.Now(),
		Network:         r.network,
	}
	if c := j.o.GitContext; c != nil {
		rec.Git = append([]attest.GitSource{*c}, rec.Git...)
	}
	slices.SortStableFunc(rec.Images, func(a, b attest.ImageSource) int { return strings.Compare(a.Ref, b.Ref) })
	last := map[int]int{} // stage index -> its last step's number
	for _, i := range j.neededStages(target) {
		notes := r.stages[i]
		for n, s := range notes {
			step := attest.Step{Stage: i, Line: s.pos.Line, End: s.pos.EndLine, Text: s.text}
			if n > 0 {
				step.Inputs = []int{len(rec.Steps) - 1}
			} else if p, ok := last[s.from]; ok && s.from >= 0 {
				step.Inputs = []int{p}
			}
			for _, l := range s.layers {
				step.Layers = append(step.Layers, v1.Descriptor{MediaType: ociLayerType(l.MediaType), Digest: l.Digest, Size: l.Size})
			}
			rec.Steps = append(rec.Steps, step)
		}
		if len(notes) > 0 {
			last[i] = len(rec.Steps) - 1
		}
	}
	return rec
}

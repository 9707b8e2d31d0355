package attest

import (
	"crypto/rand"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BuildType is the buildDefinition.buildType BuildKit writes; builder's
// parameters follow its definitions.
const BuildType = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"

// Frontend is the frontend name BuildKit records for a Dockerfile build.
const Frontend = "dockerfile.v0"

// Modes of provenance.
const (
	ModeMin = "min"
	ModeMax = "max"
)

// ProvenanceOptions are the --provenance / --attest type=provenance
// parameters.
type ProvenanceOptions struct {
	Mode         string // ModeMin or ModeMax
	BuilderID    string // runDetails.builder.id
	Reproducible bool   // runDetails.metadata.buildkit_reproducible
}

// Provenance is an SLSA v1 provenance predicate in BuildKit's shape.
type Provenance struct {
	BuildDefinition BuildDefinition `json:"buildDefinition"`
	RunDetails      RunDetails      `json:"runDetails"`
}

// BuildDefinition is the predicate's buildDefinition.
type BuildDefinition struct {
	BuildType            string               `json:"buildType"`
	ExternalParameters   ExternalParameters   `json:"externalParameters"`
	InternalParameters   InternalParameters   `json:"internalParameters"`
	ResolvedDependencies []ResourceDescriptor `json:"resolvedDependencies,omitempty"`
}

// ExternalParameters are what the user asked for.
type ExternalParameters struct {
	ConfigSource ConfigSource `json:"configSource"`
	Request      Request      `json:"request"`
}

// ConfigSource is where the Dockerfile came from.
type ConfigSource struct {
	URI    string            `json:"uri,omitempty"`
	Digest map[string]string `json:"digest,omitempty"`
	Path   string            `json:"path,omitempty"`
}

// Request is the frontend request: the frontend and its arguments.
type Request struct {
	Frontend string            `json:"frontend,omitempty"`
	Args     map[string]string `json:"args,omitempty"`
	Secrets  []IDRef           `json:"secrets,omitempty"`
	SSH      []IDRef           `json:"ssh,omitempty"`
	Locals   []Local           `json:"locals,omitempty"`
}

// IDRef names a secret or ssh socket by id.
type IDRef struct {
	ID       string `json:"id"`
	Optional bool   `json:"optional,omitempty"`
}

// Local names a local source directory.
type Local struct {
	Name string `json:"name"`
}

// InternalParameters describe the builder's side of the build.
type InternalParameters struct {
	BuildConfig     *BuildConfig `json:"buildConfig,omitempty"`
	BuilderPlatform string       `json:"builderPlatform"`
	// BuilderVersion is builder's own field: its version.
	BuilderVersion string `json:"builderVersion,omitempty"`
}

// BuildConfig lists the build's steps (mode=max). BuildKit lists LLB
// operations under the same key; builder lists Dockerfile instructions,
// with the same id and inputs scheme and no op.
type BuildConfig struct {
	Definition []BuildStep `json:"llbDefinition,omitempty"`
}

// BuildStep is one step of BuildConfig.
type BuildStep struct {
	ID     string   `json:"id"`
	Name   string   `json:"name,omitempty"` // builder's: the instruction
	Inputs []string `json:"inputs,omitempty"`
}

// ResourceDescriptor is a dependency: a URI and its digest.
type ResourceDescriptor struct {
	URI    string            `json:"uri"`
	Digest map[string]string `json:"digest,omitempty"`
}

// RunDetails describe this run of the build.
type RunDetails struct {
	Builder  Builder  `json:"builder"`
	Metadata Metadata `json:"metadata"`
}

// Builder identifies the builder.
type Builder struct {
	ID      string            `json:"id"`
	Version map[string]string `json:"version,omitempty"`
}

// Metadata are the run's id, times and BuildKit's extensions.
type Metadata struct {
	InvocationID string           `json:"invocationID"`
	StartedOn    *time.Time       `json:"startedOn,omitempty"`
	FinishedOn   *time.Time       `json:"finishedOn,omitempty"`
	BuildKit     BuildKitMetadata `json:"buildkit_metadata"`
	Hermetic     bool             `json:"buildkit_hermetic,omitempty"`
	Completeness Completeness     `json:"buildkit_completeness"`
	Reproducible bool             `json:"buildkit_reproducible,omitempty"`
}

// BuildKitMetadata holds the sources and layers of mode=max.
type BuildKitMetadata struct {
	VCS    map[string]string            `json:"vcs,omitempty"`
	Source *Source                      `json:"source,omitempty"`
	Layers map[string][][]v1.Descriptor `json:"layers,omitempty"`
}

// Source is the Dockerfile and where each step is in it.
type Source struct {
	Locations map[string]Locations `json:"locations,omitempty"`
	Infos     []SourceInfo         `json:"infos,omitempty"`
}

// Locations are the ranges of a step in the source files.
type Locations struct {
	Locations []Location `json:"locations,omitempty"`
}

// Location is one range list in source file SourceIndex (always 0: the
// Dockerfile).
type Location struct {
	SourceIndex int     `json:"sourceIndex,omitempty"`
	Ranges      []Range `json:"ranges,omitempty"`
}

// Range is a span of lines.
type Range struct {
	Start Position `json:"start"`
	End   Position `json:"end"`
}

// Position is a line (1-based).
type Position struct {
	Line int `json:"line,omitempty"`
}

// SourceInfo is one source file; Data is its content (base64 in JSON).
type SourceInfo struct {
	Filename string `json:"filename,omitempty"`
	Language string `json:"language,omitempty"`
	Data     []byte `json:"data,omitempty"`
}

// Completeness says whether the request and dependencies are complete.
type Completeness struct {
	Request              bool `json:"request"`
	ResolvedDependencies bool `json:"resolvedDependencies"`
}

// NewInvocationID returns a random id in the form BuildKit uses for a
// build: 25 characters of [0-9a-z].
func NewInvocationID() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 25)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// ParseMode reads a provenance mode; "full" is max, as in BuildKit.
func ParseMode(s string) (string, error) {
	switch s {
	case ModeMin, ModeMax:
		return s, nil
	case "full":
		return ModeMax, nil
	}
	return "", fmt.Errorf("invalid provenance mode %q: use min or max", s)
}

// NewProvenance makes the provenance predicate of r. In mode=min it names
// the dependencies, the Dockerfile path, the target and the times; build
// args, labels, secrets and ssh ids are left out (and the request is then
// incomplete). mode=max adds the disclosed build args and labels (never a
// proxy or secret-like arg), the secret and ssh ids, the steps with their
// layers and the Dockerfile itself.
func NewProvenance(r *Record, o ProvenanceOptions) (*Provenance, error) {
	if o.Mode == "" {
		o.Mode = ModeMax
	}
	if _, err := ParseMode(o.Mode); err != nil {
		return nil, err
	}
	deps, err := dependencies(r)
	if err != nil {
		return nil, err
	}
	p := &Provenance{
		BuildDefinition: BuildDefinition{
			BuildType:            BuildType,
			ResolvedDependencies: deps,
			InternalParameters: InternalParameters{
				BuilderPlatform: r.BuilderPlatform,
				BuilderVersion:  r.BuilderVersion,
			},
		},
		RunDetails: RunDetails{Builder: Builder{ID: o.BuilderID}},
	}
	ext := &p.BuildDefinition.ExternalParameters
	ext.ConfigSource.Path = filepath.Base(r.DockerfileName)
	if r.Context != nil {
		ext.ConfigSource.URI = RedactURL(r.Context.URL)
		ext.ConfigSource.Digest = commitDigest(r.Context.Commit)
	}
	ext.Request.Frontend = Frontend
	complete := true
	args := map[string]string{}
	if r.Target != "" {
		args["target"] = r.Target
	}
	if r.NoCache {
		args["no-cache"] = ""
	}
	for k, v := range r.Args {
		if o.Mode == ModeMin {
			complete = false
			continue
		}
		if Disclosed(k) {
			args["build-arg:"+k] = v
		}
	}
	for k, v := range r.Labels {
		if o.Mode == ModeMin {
			complete = false
			continue
		}
		args["label:"+k] = v
	}
	if len(args) > 0 {
		ext.Request.Args = args
	}
	if o.Mode == ModeMax {
		ext.Request.Secrets = sortedUnique(r.Secrets)
		ext.Request.SSH = sortedUnique(r.SSH)
	}
	if r.Context == nil {
		ext.Request.Locals = []Local{{Name: "context"}, {Name: "dockerfile"}}
	}
	md := &p.RunDetails.Metadata
	md.InvocationID = r.InvocationID
	if !r.Started.IsZero() {
		t := r.Started.UTC()
		md.StartedOn = &t
	}
	if !r.Finished.IsZero() {
		t := r.Finished.UTC()
		md.FinishedOn = &t
	}
	md.Reproducible = o.Reproducible
	md.Completeness = Completeness{Request: complete, ResolvedDependencies: r.Context != nil}
	md.Hermetic = r.Context != nil && !r.Network
	if r.Context != nil {
		md.BuildKit.VCS = map[string]string{"source": RedactURL(r.Context.URL), "revision": r.Context.Commit}
	}
	if o.Mode == ModeMax {
		addSteps(p, r)
	}
	return p, nil
}

// dependencies lists the images, URLs and git sources of r, each once.
func dependencies(r *Record) ([]ResourceDescriptor, error) {
	var out []ResourceDescriptor
	seen := map[string]bool{}
	add := func(d ResourceDescriptor) {
		k := d.URI + " " + fmt.Sprint(d.Digest)
		if !seen[k] {
			seen[k] = true
			out = append(out, d)
		}
	}
	for _, im := range r.Images {
		p := im.Platform
		u, err := ImagePURL(PURLDocker, im.Ref, &p)
		if err != nil {
			return nil, err
		}
		add(ResourceDescriptor{URI: u, Digest: DigestSet(im.Digest)})
	}
	for _, g := range r.Git {
		add(ResourceDescriptor{URI: RedactURL(g.URL), Digest: commitDigest(g.Commit)})
	}
	for _, h := range r.HTTP {
		algo, hex, _ := strings.Cut(h.Digest, ":")
		add(ResourceDescriptor{URI: RedactURL(h.URL), Digest: map[string]string{algo: hex}})
	}
	return out, nil
}

// RedactURL masks the user and password of a URL as BuildKit's
// urlutil.RedactCredentials does ("https://xxxxx:xxxxx@host/repo.git");
// what does not parse as a URL is returned as it is.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	const mask = "xxxxx"
	_, hasPassword := u.User.Password()
	switch hasUser := u.User.Username() != ""; {
	case hasUser && hasPassword:
		u.User = url.UserPassword(mask, mask)
	case hasUser:
		u.User = url.User(mask)
	case hasPassword:
		u.User = url.UserPassword("", mask)
	}
	return u.String()
}

// commitDigest is a git commit as a digest set: sha1, or sha256 for a
// SHA-256 repository.
func commitDigest(c string) map[string]string {
	if len(c) == 64 {
		return map[string]string{"sha256": c}
	}
	return map[string]string{"sha1": c}
}

// addSteps adds the mode=max build config, step locations, layers and
// the Dockerfile.
func addSteps(p *Provenance, r *Record) {
	bc := &BuildConfig{}
	src := &Source{Infos: []SourceInfo{{Filename: filepath.Base(r.DockerfileName), Language: "Dockerfile", Data: r.Dockerfile}}}
	layers := map[string][][]v1.Descriptor{}
	for i, s := range r.Steps {
		id := "step" + strconv.Itoa(i)
		bs := BuildStep{ID: id, Name: s.Text}
		for _, in := range s.Inputs {
			bs.Inputs = append(bs.Inputs, "step"+strconv.Itoa(in)+":0")
		}
		bc.Definition = append(bc.Definition, bs)
		if s.Line > 0 {
			if src.Locations == nil {
				src.Locations = map[string]Locations{}
			}
			end := max(s.End, s.Line)
			src.Locations[id] = Locations{Locations: []Location{{Ranges: []Range{{Start: Position{s.Line}, End: Position{end}}}}}}
		}
		if len(s.Layers) > 0 {
			layers[id+":0"] = [][]v1.Descriptor{s.Layers}
		}
	}
	if len(bc.Definition) > 0 {
		p.BuildDefinition.InternalParameters.BuildConfig = bc
	}
	p.RunDetails.Metadata.BuildKit.Source = src
	if len(layers) > 0 {
		p.RunDetails.Metadata.BuildKit.Layers = layers
	}
}

// sortedUnique sorts ids by id and drops repeats; an id mounted both
// optional and required is required.
func sortedUnique(ids []IDRef) []IDRef {
	m := map[string]bool{} // id -> optional
	for _, x := range ids {
		opt, seen := m[x.ID]
		m[x.ID] = x.Optional && (!seen || opt)
	}
	var out []IDRef
	for id, opt := range m {
		out = append(out, IDRef{ID: id, Optional: opt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

package build

import (
	"path"
	"runtime"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"builder/parser"
)

// Outline is what `--call outline` shows of a target: its build args,
// secrets and ssh ids, in the JSON shape of BuildKit's outline subrequest
// (frontend/subrequests/outline).
type Outline struct {
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Args        []OutlineArg    `json:"args,omitempty"`
	Secrets     []OutlineSecret `json:"secrets,omitempty"`
	SSH         []OutlineSecret `json:"ssh,omitempty"`
}

// OutlineArg is a build arg the target reads, with its default value.
type OutlineArg struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Value       string `json:"value,omitempty"`
	line        int
}

// OutlineSecret is a secret or ssh id a RUN --mount of the target uses.
type OutlineSecret struct {
	Name     string `json:"name"`
	Required bool   `json:"required,omitempty"`
	line     int
}

// Target is one stage in `--call targets`, in the JSON shape of BuildKit's
// targets subrequest.
type Target struct {
	Name        string `json:"name,omitempty"`
	Default     bool   `json:"default,omitempty"`
	Description string `json:"description,omitempty"`
	Base        string `json:"base,omitempty"`
	Platform    string `json:"platform,omitempty"`
}

// Targets lists the stages of g; the last is the default target.
func Targets(g *parser.Graph) []Target {
	var out []Target
	for i, s := range g.Stages {
		out = append(out, Target{Name: s.Name, Default: i == len(g.Stages)-1, Description: s.Description,
			Base: s.Base, Platform: s.Platform})
	}
	return out
}

// OutlineOf describes o.Target (default the last stage) of g without
// building anything: the ARGs of the stages it needs and the global ARGs
// their FROM lines use, with their default values after --build-arg, and
// the secrets and ssh ids their RUN --mount options ask for, each in
// Dockerfile order.
func OutlineOf(g *parser.Graph, o Options) (*Outline, error) {
	if o.Platform.OS == "" {
		o.Platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	j := &job{g: g, o: o}
	if err := j.evalMetaArgs(); err != nil {
		return nil, err
	}
	target, err := targetStage(g, o.Target)
	if err != nil {
		return nil, err
	}
	ts := g.Stages[target]
	out := &Outline{Name: ts.Name, Description: ts.Description}
	seenArg, seenSecret, seenSSH := map[string]bool{}, map[string]bool{}, map[string]bool{}
	addArg := func(kv parser.ArgPair, line int) {
		if seenArg[kv.Key] {
			return
		}
		seenArg[kv.Key] = true
		a := OutlineArg{Name: kv.Key, Description: kv.Description, line: line}
		if v, ok := o.BuildArgs[kv.Key]; ok {
			a.Value = v
		} else if v, ok := j.meta.Get(kv.Key); ok {
			a.Value = v
		} else if kv.Value != nil {
			a.Value = *kv.Value
		}
		out.Args = append(out.Args, a)
	}
	metaUsed := map[string]bool{}
	for _, i := range j.neededStages(target) {
		s := g.Stages[i]
		for _, w := range []string{s.Base, s.Platform} {
			for _, name := range wordVars(g.Escape, w) {
				metaUsed[name] = true
			}
		}
		for _, step := range s.Steps {
			switch op := step.Op.(type) {
			case *parser.Arg:
				for _, kv := range op.Pairs {
					addArg(kv, step.Pos.Line)
				}
			case *parser.Run:
				for _, m := range op.Mounts {
					switch m.Type {
					case "secret":
						id := m.ID
						if id == "" && m.Target != "" {
							id = path.Base(m.Target)
						}
						if id != "" && !seenSecret[id] {
							seenSecret[id] = true
							out.Secrets = append(out.Secrets, OutlineSecret{Name: id, Required: m.Required, line: step.Pos.Line})
						}
					case "ssh":
						id := m.ID
						if id == "" {
							id = "default"
						}
						if !seenSSH[id] {
							seenSSH[id] = true
							out.SSH = append(out.SSH, OutlineSecret{Name: id, Required: m.Required, line: step.Pos.Line})
						}
					}
				}
			}
		}
	}
	for i, a := range g.MetaArgs {
		for _, kv := range a.Pairs {
			if metaUsed[kv.Key] {
				addArg(kv, g.MetaSteps[i].Pos.Line)
			}
		}
	}
	sort.SliceStable(out.Args, func(a, b int) bool { return out.Args[a].line < out.Args[b].line })
	return out, nil
}

// wordVars returns the names of the variables word refers to.
func wordVars(escape rune, word string) []string {
	if escape == 0 {
		escape = '\\'
	}
	_, unmatched, err := shell.NewLex(escape).ProcessWord(word, shell.EnvsFromSlice(nil))
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(unmatched))
	for n := range unmatched {
		names = append(names, n)
	}
	return names
}

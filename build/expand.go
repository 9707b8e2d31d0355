package build

import (
	"fmt"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"builder/parser"
)

// vars is an ordered set of variables used for word expansion: later Set
// calls replace earlier values but keep the original position.
type vars struct {
	keys []string
	vals map[string]string
	// unset are the keys declared without a value (an ARG with no default
	// and no --build-arg): listed in keys, but not set, so a RUN does not
	// see them and ${k-default} takes the default, as in BuildKit.
	unset map[string]bool
}

func newVars() *vars { return &vars{vals: map[string]string{}} }

func (v *vars) Set(k, val string) {
	if _, ok := v.vals[k]; !ok {
		v.keys = append(v.keys, k)
	}
	v.vals[k] = val
	delete(v.unset, k)
}

// Declare adds k without a value, unless it has one.
func (v *vars) Declare(k string) {
	if _, ok := v.vals[k]; ok {
		return
	}
	v.Set(k, "")
	if v.unset == nil {
		v.unset = map[string]bool{}
	}
	v.unset[k] = true
}

// Get returns the value of k; ok is false for a key never set or only
// declared.
func (v *vars) Get(k string) (string, bool) {
	val, ok := v.vals[k]
	return val, ok && !v.unset[k]
}

func (v *vars) Keys() []string { return append([]string(nil), v.keys...) }

// envVars parses a KEY=VALUE list into vars.
func envVars(env []string) *vars {
	v := newVars()
	for _, kv := range env {
		k, val, _ := strings.Cut(kv, "=")
		v.Set(k, val)
	}
	return v
}

// setEnv sets key=val in an environment list, keeping the order of first
// appearance as Docker does.
func setEnv(env []string, key, val string) []string {
	for i, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); shell.EqualEnvKeys(k, key) {
			out := append([]string(nil), env...)
			out[i] = key + "=" + val
			return out
		}
	}
	return append(append([]string(nil), env...), key+"="+val)
}

// expander expands Dockerfile words with BuildKit's shell lexer against the
// stage's environment and the build args in scope. ENV wins over ARG.
type expander struct {
	lex *shell.Lex
	env *vars
}

func newExpander(escape rune, env []string, args *vars) *expander {
	all := newVars()
	for _, k := range args.keys {
		if !args.unset[k] {
			all.Set(k, args.vals[k])
		}
	}
	e := envVars(env)
	for _, k := range e.keys {
		all.Set(k, e.vals[k])
	}
	if escape == 0 {
		escape = '\\'
	}
	return &expander{lex: shell.NewLex(escape), env: all}
}

// word expands one Dockerfile word. Variables may contribute at most
// MaxWordExpansion bytes to it; a word that would take more fails with a
// LimitError before the lexer holds more than that.
func (e *expander) word(w string) (string, error) {
	return expandBounded(e.lex, w, e.env)
}

// expandBounded expands w with lex against env, handing the lexer at most
// MaxWordExpansion bytes of variable values (see budgetEnv).
func expandBounded(lex *shell.Lex, w string, env *vars) (string, error) {
	b := &budgetEnv{vars: env, left: MaxWordExpansion, wordLen: len(w), replace: mayReplace(w)}
	out, _, err := lex.ProcessWord(w, b)
	if b.over {
		return "", &LimitError{What: fmt.Sprintf("%.60q", w), Limit: MaxWordExpansion}
	}
	return out, err
}

// fields expands each word and splits the results at unquoted blanks, as
// BuildKit does for EXPOSE: "$PORTS" with PORTS="80 53/udp" is two ports.
// The same MaxWordExpansion limit as word applies to each word.
func (e *expander) fields(ws []string) ([]string, error) {
	var out []string
	for _, w := range ws {
		b := &budgetEnv{vars: e.env, left: MaxWordExpansion, wordLen: len(w), replace: mayReplace(w)}
		fs, err := e.lex.ProcessWords(w, b)
		if b.over {
			return nil, &LimitError{What: fmt.Sprintf("%.60q", w), Limit: MaxWordExpansion}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	return out, nil
}

func (e *expander) words(ws []string) ([]string, error) {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		x, err := e.word(w)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

// pairs expands the keys and values of ENV or LABEL pairs, each against the
// state before the instruction, as Docker does.
func (e *expander) pairs(kvs []parser.KeyValue) ([]parser.KeyValue, error) {
	out := make([]parser.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		k, err := e.word(kv.Key)
		if err != nil {
			return nil, err
		}
		v, err := e.word(kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, parser.KeyValue{Key: k, Value: v})
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

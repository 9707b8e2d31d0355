package build

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"builder/snapshot/content"
)

// Limits on what a Dockerfile may make the builder hold. A few hundred
// bytes of ARG lines can double a value thirty times over, so every
// expansion is bounded while it runs, not only checked afterwards.
//
// The values are far above what real Dockerfiles use and small enough that
// a build stays within tens of MiB of memory per stage: Linux refuses an
// environment string longer than 128 KiB (MAX_ARG_STRLEN) and an argv plus
// environment above ARG_MAX (2 MiB with the default 8 MiB stack) anyway,
// so a RUN could not even start with more.
const (
	// MaxValueSize bounds one expanded ARG, ENV or LABEL key or value.
	MaxValueSize = 1 << 20
	// MaxWordExpansion bounds the bytes that variables may contribute to
	// one expanded word (the word's own text is not counted, so a long
	// heredoc is fine): a word may reference the whole environment once,
	// not one big value a thousand times.
	MaxWordExpansion = 4 << 20
	// MaxEnvSize bounds a stage's environment: its ENV and the build args
	// in scope, counted as KEY=VALUE strings, and likewise the global
	// ARGs before the first FROM.
	MaxEnvSize = 4 << 20
	// MaxConfigSize bounds the image config the builder writes; it is the
	// limit the store's readers use, so whatever is built can be read
	// back.
	MaxConfigSize = content.MaxConfigSize
)

// LimitError says that something a Dockerfile expands to is larger than
// the builder allows. Its message ends in "expands to more than N bytes".
type LimitError struct {
	What  string // what crossed the limit, e.g. `ENV value of "A"`
	Limit int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s expands to more than %d bytes", e.What, e.Limit)
}

// budgetEnv is the variable lookup handed to BuildKit's shell lexer. It
// counts the bytes it hands out and, once the next value would take the
// word past its budget, hands out empty values and remembers that the word
// is over: the lexer then finishes cheaply, and the caller reports a
// LimitError instead of the result.
//
// A word that uses pattern replacement (${name/pattern/repl}) can produce
// more than it was handed: every match of the pattern becomes a copy of
// the replacement. The lexer evaluates the replacement before it looks the
// name up, and the replacement is at most the word's text plus everything
// handed out so far, so for such words each value is charged as the worst
// case of replacing at every position of it.
type budgetEnv struct {
	vars    *vars
	left    int  // bytes still to be handed out
	used    int  // bytes charged so far
	wordLen int  // length of the word's own text
	replace bool // the word may use ${name/pattern/repl}
	over    bool // a lookup did not fit the budget
}

// Get returns the value of k, or an empty value once the budget is spent.
func (b *budgetEnv) Get(k string) (string, bool) {
	v, ok := b.vars.Get(k)
	if !ok || v == "" {
		return v, ok
	}
	if b.over {
		return "", true
	}
	cost := len(v)
	if b.replace {
		// Both factors are at most a few MiB, so the product cannot
		// overflow an int.
		cost += (len(v) + 1) * (b.wordLen + b.used)
	}
	if cost > b.left {
		b.over = true
		return "", true
	}
	b.left -= cost
	b.used += cost
	return v, true
}

// Keys lists the variables, for the lexer's suggestions.
func (b *budgetEnv) Keys() []string { return b.vars.Keys() }

// mayReplace reports whether a word may use a pattern replacement
// (${name/...}); it errs on the side of yes, quotes and escapes included.
func mayReplace(w string) bool {
	for i := 0; ; {
		j := strings.Index(w[i:], "${")
		if j < 0 {
			return false
		}
		i += j + 2
		k := i
		for k < len(w) && (w[k] == '_' || w[k] >= 'a' && w[k] <= 'z' || w[k] >= 'A' && w[k] <= 'Z' || w[k] >= '0' && w[k] <= '9') {
			k++
		}
		if k < len(w) && w[k] == '/' {
			return true
		}
	}
}

// checkValue returns a LimitError if an expanded ARG, ENV or LABEL key or
// value is longer than MaxValueSize.
func checkValue(what, key, val string) error {
	if len(key) > MaxValueSize {
		return &LimitError{What: fmt.Sprintf("%s key %.40q...", what, key), Limit: MaxValueSize}
	}
	if len(val) > MaxValueSize {
		return &LimitError{What: fmt.Sprintf("%s value of %.40q", what, key), Limit: MaxValueSize}
	}
	return nil
}

// envSize is the size of KEY=VALUE strings of vars.
func envSize(v *vars) int {
	n := 0
	for _, k := range v.keys {
		n += len(k) + 1 + len(v.vals[k])
	}
	return n
}

// checkEnv returns a LimitError if a stage's environment, its ENV plus
// the build args in scope, is larger than MaxEnvSize.
func (s *stageState) checkEnv() error {
	n := envSize(s.args)
	for _, kv := range s.cfg.Config.Env {
		n += len(kv)
	}
	if n > MaxEnvSize {
		return &LimitError{What: "the stage's environment (ENV and ARG)", Limit: MaxEnvSize}
	}
	return nil
}

// jsonLen is the length of s as a JSON string, quotes included.
func jsonLen(s string) int {
	dt, err := json.Marshal(s)
	if err != nil {
		return len(s)*6 + 2 // cannot happen for a string; the escaped worst case
	}
	return len(dt)
}

// jsonListLen is the length of a JSON list of strings.
func jsonListLen(l []string) int {
	n := 2
	for _, s := range l {
		n += jsonLen(s) + 1
	}
	return n
}

// lookupEnv returns the KEY=VALUE entry of key in env.
func lookupEnv(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); shell.EqualEnvKeys(k, key) {
			return kv, true
		}
	}
	return "", false
}

// growConfig adds n bytes to the running size of the stage's config.
func (s *stageState) growConfig(n int) { s.cfgSize += n }

// measureConfig sets the running size of the stage's config to its exact
// marshalled size.
func (s *stageState) measureConfig() {
	dt, err := json.Marshal(s.cfg)
	if err != nil {
		return
	}
	s.cfgSize = len(dt)
}

// configReserve is the room checkConfig leaves below MaxConfigSize for
// what commitImage adds to a stage's config and the running size does
// not count: the rootfs type, the creation time, the brackets of lists
// that were empty. (--label and the inline cache can add more; commitImage
// checks the final size itself.)
const configReserve = 1024

// checkConfig returns a LimitError once the stage's config would be larger
// than MaxConfigSize. The running size is updated by every step and may
// count a replaced value twice; when it crosses the limit, the config is
// measured exactly before anything is reported.
func (s *stageState) checkConfig() error {
	const limit = MaxConfigSize - configReserve
	if s.cfgSize <= limit {
		return nil
	}
	s.measureConfig()
	if s.cfgSize <= limit {
		return nil
	}
	return &LimitError{What: "the image config", Limit: MaxConfigSize}
}

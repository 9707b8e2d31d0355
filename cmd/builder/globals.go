package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/pflag"

	"builder/build"
	"builder/build/registry"
	"builder/build/rootless"
)

// globals are the options every command takes: where the store is.
type globals struct {
	root        string
	snapshotter string
	gcKeep      string // --gc-keep-storage as given, "" for the default
	regConfig   string // --registry-config as given, "" for the default
}

// defaultRoot is /var/lib/builder for root, $XDG_DATA_HOME/builder (or
// ~/.local/share/builder) otherwise, also inside the rootless user
// namespace where the user is uid 0; BUILDER_ROOT overrides both.
func defaultRoot() string {
	if r := os.Getenv("BUILDER_ROOT"); r != "" {
		return r
	}
	if os.Geteuid() == 0 && !rootless.InNamespace() {
		return "/var/lib/builder"
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "builder")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "builder")
}

// addGlobalFlags registers the store flags on a command's flag set, so they
// may stand before or after the command name.
func addGlobalFlags(fs *pflag.FlagSet, g *globals) {
	fs.StringVar(&g.root, "root", g.root, "store directory (env BUILDER_ROOT)")
	fs.StringVar(&g.snapshotter, "snapshotter", g.snapshotter, "snapshotter: overlay, naive, or empty for automatic")
	fs.StringVar(&g.regConfig, "registry-config", g.regConfig, "registry mirrors, plain HTTP and TLS settings, a TOML file (env BUILDER_REGISTRY_CONFIG; see docs/registries.md)")
	fs.StringVar(&g.gcKeep, "gc-keep-storage", g.gcKeep, "after each build, evict least recently used cache down to SIZE; 0 disables (env BUILDER_GC_KEEP_STORAGE; default 10% of the disk, at most 20GB)")
}

// parseGlobals reads the store flags that stand before the command name.
// -h and --help there stand for the help command, --version for version.
func parseGlobals(args []string) (*globals, []string, error) {
	g := &globals{root: defaultRoot(), gcKeep: os.Getenv("BUILDER_GC_KEEP_STORAGE")}
	fs := pflag.NewFlagSet("builder", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	addGlobalFlags(fs, g)
	showVersion := fs.Bool("version", false, "print the version")
	err := fs.Parse(args)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		return g, []string{"help"}, nil
	case err != nil:
		return nil, nil, usagef("%w", err)
	case *showVersion:
		return g, []string{"version"}, nil
	}
	return g, fs.Args(), nil
}

// open opens the builder on the store at --root; rc is the registry
// client its builds use (nil for commands that reach no registry).
func (g *globals) open(rc *registry.Client) (*build.Builder, error) {
	cfg := build.Config{Root: g.root, Snapshotter: g.snapshotter, Registry: rc}
	if g.gcKeep != "" {
		n, err := parseSize(g.gcKeep)
		if err != nil {
			return nil, usagef("--gc-keep-storage: %w", err)
		}
		cfg.GCKeepStorage = n
		if n == 0 {
			cfg.GCKeepStorage = -1 // 0 turns automatic GC off
		}
	}
	return build.New(cfg)
}

// globalsUsed lists the global flags each command acts on; the others are
// accepted (a global flag may stand after any command name) but left out
// of the command's help. A command not listed uses none.
var globalsUsed = map[string][]string{
	"build":             {"root", "snapshotter", "registry-config", "gc-keep-storage"},
	"check":             {"root", "snapshotter"},
	"du":                {"root", "snapshotter"},
	"prune":             {"root", "snapshotter"},
	"rmi":               {"root", "snapshotter"},
	"diff":              {"root", "registry-config"},
	"inspect":           {"root", "registry-config"},
	"push":              {"root", "registry-config"},
	"pull":              {"root", "registry-config"},
	"login":             {"registry-config"},
	"images":            {"root"},
	"history":           {"root"},
	"tag":               {"root"},
	"save":              {"root"},
	"load":              {"root"},
	"completion":        {"root"},
	"__complete-images": {"root"},
}

// newFlagSet makes a command's flag set with the global flags on it,
// hiding from its help those the command does not use.
func newFlagSet(name string, g *globals) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	addGlobalFlags(fs, g)
	used := globalsUsed[name]
	fs.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(used, f.Name) {
			f.Hidden = true
		}
	})
	return fs
}

package main

import (
	"fmt"

	"github.com/spf13/pflag"
)

// buildxFlag is a flag of `docker buildx build` (or of the classic `docker
// build` it still hides) that builder has no equivalent for: accepted and
// ignored when it cannot change the result, else refused by name.
type buildxFlag struct {
	name   string
	bool   bool   // takes no value
	ignore bool   // accepted and ignored
	reason string // why: printed with the refusal, listed in docs/cli.md
}

// buildxFlags lists them. Flags builder implements are ordinary flags of
// `builder build`; see docs/cli.md for the whole table.
var buildxFlags = []buildxFlag{
	{name: "builder", ignore: true, reason: "builder has no builder instances: every build runs in this process"},
	{name: "debug", bool: true, ignore: true, reason: "errors already carry the Dockerfile line and the step's last output"},
	{name: "rm", bool: true, ignore: true, reason: "no intermediate containers are kept"},
	{name: "force-rm", bool: true, ignore: true, reason: "no intermediate containers are kept"},
	{name: "compress", bool: true, ignore: true, reason: "the context is read in place, never sent"},
	{name: "disable-content-trust", bool: true, ignore: true, reason: "Docker Content Trust is not used; pin images by digest"},
	{name: "cgroup-parent", reason: "RUN cgroups are made under builder's own; use --memory, --cpus, --pids-limit"},
	{name: "cpu-shares", reason: "use --cpus"},
	{name: "cpu-period", reason: "use --cpus"},
	{name: "cpu-quota", reason: "use --cpus"},
	{name: "cpuset-cpus", reason: "use --cpus"},
	{name: "cpuset-mems", reason: "use --cpus"},
	{name: "memory-swap", reason: "use --memory (swap is not limited separately)"},
	{name: "security-opt", reason: "RUN gets Docker's default seccomp and capabilities; use RUN --security=insecure with --allow security.insecure"},
	{name: "squash", bool: true, reason: "layers are kept as built"},
	{name: "detach", bool: true, reason: "builds run in the foreground; there is no daemon"},
	{name: "invoke", reason: "interactive debugging of a build is not supported"},
	{name: "print", reason: "use --call"},
}

// addBuildxFlags registers the flags of buildxFlags, hidden from --help.
func addBuildxFlags(fs *pflag.FlagSet) {
	for _, f := range buildxFlags {
		if f.bool {
			fs.Bool(f.name, false, f.reason)
		} else {
			fs.String(f.name, "", f.reason)
		}
		_ = fs.MarkHidden(f.name)
	}
}

// checkBuildxFlags refuses a buildx flag builder does not support, naming
// it and what to use instead.
func checkBuildxFlags(fs *pflag.FlagSet) error {
	for _, f := range buildxFlags {
		if !f.ignore && fs.Changed(f.name) {
			return usagef("--%s is a buildx flag builder does not support: %s", f.name, f.reason)
		}
	}
	return nil
}

// flagError adds a hint to pflag's "unknown flag" errors.
func flagError(err error) error {
	return usagef("%w (see 'builder build --help'; docs/cli.md lists every buildx flag and what builder does with it)", err)
}

// buildxBuildFlags are the flags of `docker buildx build` (v0.2x), for the
// table in docs/cli.md.
var buildxBuildFlags = []string{"add-host", "allow", "annotation", "attest", "build-arg", "build-context",
	"builder", "cache-from", "cache-to", "call", "cgroup-parent", "check", "debug", "detach", "file", "iidfile",
	"invoke", "label", "load", "metadata-file", "network", "no-cache", "no-cache-filter", "output", "platform",
	"print", "progress", "provenance", "pull", "push", "quiet", "sbom", "secret", "shm-size", "ssh", "tag",
	"target", "ulimit",
	// hidden in buildx, from the classic docker build
	"compress", "cpu-period", "cpu-quota", "cpu-shares", "cpuset-cpus", "cpuset-mems", "disable-content-trust",
	"force-rm", "isolation", "memory", "memory-swap", "rm", "security-opt", "squash"}

// buildxFlagTable is the Markdown table of what builder does with each
// buildx flag, given the flags `builder build --help` lists.
func buildxFlagTable(supported []flagDoc) string {
	have := map[string]bool{}
	for _, f := range supported {
		have[f.long] = true
	}
	other := map[string]buildxFlag{}
	for _, f := range buildxFlags {
		other[f.name] = f
	}
	s := "\n### buildx flags\n\nWhat `builder build` does with each flag of `docker buildx build`:\n\n" +
		"| buildx flag | builder |\n| --- | --- |\n"
	for _, name := range buildxBuildFlags {
		what := "not supported yet: refused as an unknown flag"
		if f, ok := other[name]; ok {
			what = "refused: " + f.reason
			if f.ignore {
				what = "accepted and ignored: " + f.reason
			}
		} else if have[name] {
			what = "supported (see above)"
		}
		s += fmt.Sprintf("| `--%s` | %s |\n", name, what)
	}
	return s
}

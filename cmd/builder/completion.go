package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"builder/build"
	"builder/export"
)

// imageArgCommands are the commands whose arguments are local image names,
// which the completion scripts offer from `builder __complete-images`, with
// the --root the command line names.
var imageArgCommands = []string{"inspect", "history", "tag", "rmi", "push", "save", "diff"}

// flagValues are the values the completion scripts offer for flags that
// take one of a set, by command and flag; "*" holds the global flags'.
func flagValues() map[string]map[string][]string {
	var outputs []string
	for t := range outputAttrs {
		outputs = append(outputs, "type="+t)
	}
	sort.Strings(outputs)
	return map[string]map[string][]string{
		"*": {"snapshotter": {"overlay", "naive"}},
		"build": {
			"progress":  {"auto", "tty", "plain", "rawjson", "quiet"},
			"network":   {build.NetworkDefault, build.NetworkNone, build.NetworkHost},
			"isolation": {build.IsolationAuto, build.IsolationNamespaces, build.IsolationChroot},
			"output":    outputs,
			"o":         outputs,
		},
		"save": {"format": {"docker-archive", "oci-archive"}},
	}
}

// valueCases writes one case per flag with values, "PATTERN) WORDS" as
// pattern(cmd, flag) and words(values) spell them.
func valueCases(w io.Writer, indent string, pattern func(cmd, flag string) string, words func([]string) string) {
	vals := flagValues()
	cmds := slices.Sorted(maps.Keys(vals))
	for _, c := range cmds {
		for _, f := range slices.Sorted(maps.Keys(vals[c])) {
			fmt.Fprintf(w, "%s%s) %s ;;\n", indent, pattern(c, f), words(vals[c][f]))
		}
	}
}

// dashes spells a flag name as typed: -o, --output.
func dashes(f string) string {
	if len(f) == 1 {
		return "-" + f
	}
	return "--" + f
}

// runCompleteImages prints the names of the local images for completion:
// each tagged name as docker shows it (app:1) and in full
// (docker.io/library/app:1). It creates no store and prints no errors.
func runCompleteImages(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("__complete-images", g)
	usage := "builder __complete-images\n\nPrint the local image names the completion scripts offer.\n\n" +
		"Examples:\n  builder --root /srv/builder __complete-images"
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	entries, err := mustIndex(g)
	if err != nil {
		return nil // completion offers nothing rather than an error
	}
	seen := map[string]bool{}
	for _, e := range entries {
		r := newImageRow(e, false, time.Time{})
		for _, n := range []string{r.Repository + ":" + r.Tag, e.Name} {
			if !seen[n] {
				seen[n] = true
				fmt.Println(n)
			}
		}
	}
	return nil
}

// mustIndex lists the store's images; a directory that holds no store
// stays without one.
func mustIndex(g *globals) ([]export.Entry, error) {
	if _, err := os.Stat(filepath.Join(g.root, "index.json")); err != nil {
		return nil, err
	}
	idx, err := export.OpenIndex(g.root)
	if err != nil {
		return nil, err
	}
	return idx.List()
}

// completionCommand is what a completion script knows of one command.
type completionCommand struct {
	names   []string // name and aliases
	summary string
	flags   []flagDoc
}

// completionData lists the visible commands and their flags, read from
// each command's help text, plus the global flags.
func completionData(ctx context.Context) ([]completionCommand, error) {
	var out []completionCommand
	for _, c := range visibleCommands() {
		help, err := helpText(ctx, c)
		if err != nil {
			return nil, err
		}
		flags := helpFlags(help)
		if len(flags) == 0 {
			flags = []flagDoc{{long: "root", usage: "store directory"}, {long: "snapshotter", usage: "snapshotter"}}
		}
		flags = append(flags, flagDoc{long: "help", short: "h", usage: "show help"})
		out = append(out, completionCommand{names: append([]string{c.name}, c.aliases...), summary: c.summary, flags: flags})
	}
	return out, nil
}

func flagWords(flags []flagDoc) string {
	var w []string
	for _, f := range flags {
		w = append(w, "--"+f.long)
		if f.short != "" {
			w = append(w, "-"+f.short)
		}
	}
	sort.Strings(w)
	return strings.Join(w, " ")
}

func writeBashCompletion(w io.Writer, cmds []completionCommand) {
	var names []string
	for _, c := range cmds {
		names = append(names, c.names...)
	}
	fmt.Fprintf(w, `# bash completion for builder. Load it with:
#   source <(builder completion bash)
_builder() {
	local cur prev cmd i
	local -a root
	cur="${COMP_WORDS[COMP_CWORD]}"
	prev="${COMP_WORDS[COMP_CWORD-1]}"
	cmd=""
	for ((i = 1; i < COMP_CWORD; i++)); do
		case "${COMP_WORDS[i]}" in
		--root) root=(--root "${COMP_WORDS[i+1]}"); ((i++)) ;;
		--root=*) root=("${COMP_WORDS[i]}") ;;
		--snapshotter) ((i++)) ;;
		-*) ;;
		*) if [[ -z "$cmd" ]]; then cmd="${COMP_WORDS[i]}"; fi ;;
		esac
	done
	# bash splits --flag=value at the "=".
	if [[ "$prev" == "=" && COMP_CWORD -ge 2 ]]; then
		prev="${COMP_WORDS[COMP_CWORD-2]}"
	fi
	local values=""
	case "${cmd:-*}:$prev" in
`)
	valueCases(w, "\t", func(c, f string) string { return c + ":" + dashes(f) },
		func(v []string) string { return "values=" + strconv.Quote(strings.Join(v, " ")) })
	fmt.Fprintf(w, `	esac
	if [[ -n "$values" ]]; then
		COMPREPLY=($(compgen -W "$values" -- "$cur"))
		return
	fi
	if [[ -z "$cmd" ]]; then
		if [[ "$cur" == -* ]]; then
			COMPREPLY=($(compgen -W "--root --snapshotter --help" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "%s" -- "$cur"))
		fi
		return
	fi
	local opts=""
	case "$cmd" in
`, strings.Join(names, " "))
	for _, c := range cmds {
		fmt.Fprintf(w, "\t%s) opts=%q ;;\n", strings.Join(c.names, "|"), flagWords(c.flags))
	}
	fmt.Fprintf(w, `	esac
	if [[ "$cur" == -* ]]; then
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		return
	fi
	case "$cmd" in
	%s)
		COMPREPLY=($(compgen -W "$(builder "${root[@]}" __complete-images 2>/dev/null)" -- "$cur")) ;;
	completion)
		COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")) ;;
	*)
		COMPREPLY=($(compgen -f -- "$cur")) ;;
	esac
}
complete -o default -F _builder builder
`, strings.Join(imageArgCommands, "|"))
}

func writeZshCompletion(w io.Writer, cmds []completionCommand) {
	fmt.Fprintf(w, `#compdef builder
# zsh completion for builder. Load it with:
#   source <(builder completion zsh)
# or save it as _builder in a directory on $fpath.
_builder() {
	local -a commands
	commands=(
`)
	for _, c := range cmds {
		for _, n := range c.names {
			fmt.Fprintf(w, "\t\t%s\n", zshQuote(n+":"+c.summary))
		}
	}
	fmt.Fprintf(w, `	)
	# The command is the first word after the global options and their values.
	local i=2
	while (( i < CURRENT )) && [[ $words[i] == -* ]]; do
		case $words[i] in
		--root|--snapshotter) (( i += 2 )) ;;
		*) (( i++ )) ;;
		esac
	done
	if (( CURRENT == i )); then
		_describe 'command' commands
		return
	fi
	local cmd=$words[i]
	# The --root typed anywhere is the store whose images are offered.
	local -a root
	local j
	for (( j = 2; j < CURRENT; j++ )); do
		case $words[j] in
		--root) root=(--root $words[j+1]) ;;
		--root=*) root=($words[j]) ;;
		esac
	done
	case $cmd:$words[CURRENT-1] in
`)
	valueCases(w, "\t", func(c, f string) string { return c + ":" + dashes(f) },
		func(v []string) string { return "compadd -- " + strings.Join(v, " ") + "; return" })
	fmt.Fprintf(w, `	esac
	local -a opts
	case $cmd in
`)
	for _, c := range cmds {
		var specs []string
		for _, f := range c.flags {
			specs = append(specs, zshQuote("--"+f.long+"["+zshBracket(f.usage)+"]"))
		}
		fmt.Fprintf(w, "\t%s) opts=(%s) ;;\n", strings.Join(c.names, "|"), strings.Join(specs, " "))
	}
	fmt.Fprintf(w, `	esac
	if [[ $PREFIX == -* ]]; then
		_values 'option' $opts
		return
	fi
	case $cmd in
	%s) compadd -- ${(f)"$(builder $root __complete-images 2>/dev/null)"} ;;
	completion) compadd -- bash zsh fish ;;
	*) _files ;;
	esac
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
	_builder "$@"
else
	compdef _builder builder
fi
`, strings.Join(imageArgCommands, "|"))
}

func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// zshBracket makes s safe inside a _values [description].
func zshBracket(s string) string {
	return strings.NewReplacer("[", "(", "]", ")", ":", " ").Replace(s)
}

func writeFishCompletion(w io.Writer, cmds []completionCommand) {
	fmt.Fprintf(w, "# fish completion for builder. Load it with:\n#   builder completion fish | source\n")
	// __fish_use_subcommand would take the value of --root for the command.
	fmt.Fprintf(w, `function __builder_needs_command
	set -l args (commandline -opc)
	set -e args[1]
	while set -q args[1]
		switch $args[1]
			case --root --snapshotter
				set -e args[1]
			case '-*'
			case '*'
				return 1
		end
		set -e args[1]
	end
	return 0
end
`)
	fmt.Fprintf(w, `function __builder_images
	set -l args (commandline -opc)
	set -l root
	for i in (seq (count $args))
		switch $args[$i]
			case --root
				set root --root $args[(math $i + 1)]
			case '--root=*'
				set root $args[$i]
		end
	end
	builder $root __complete-images 2>/dev/null
end
`)
	fmt.Fprintf(w, "complete -c builder -f\n")
	fmt.Fprintf(w, "complete -c builder -n __builder_needs_command -l root -r -d %s\n", fishQuote("store directory"))
	fmt.Fprintf(w, "complete -c builder -n __builder_needs_command -l snapshotter -x -a 'overlay naive' -d %s\n", fishQuote("snapshotter"))
	for _, c := range cmds {
		for _, n := range c.names {
			fmt.Fprintf(w, "complete -c builder -n __builder_needs_command -a %s -d %s\n", n, fishQuote(c.summary))
		}
	}
	vals := flagValues()
	for _, c := range cmds {
		cond := fishQuote("__fish_seen_subcommand_from " + strings.Join(c.names, " "))
		for _, f := range c.flags {
			short, values := "", ""
			if f.short != "" {
				short = " -s " + f.short
			}
			if v := vals[c.names[0]][f.long]; len(v) > 0 {
				values = " -x -a " + fishQuote(strings.Join(v, " "))
			}
			fmt.Fprintf(w, "complete -c builder -n %s -l %s%s%s -d %s\n", cond, f.long, short, values, fishQuote(f.usage))
		}
	}
	fmt.Fprintf(w, "complete -c builder -n %s -a '(__builder_images)'\n",
		fishQuote("__fish_seen_subcommand_from "+strings.Join(imageArgCommands, " ")))
	fmt.Fprintf(w, "complete -c builder -n %s -a 'bash zsh fish'\n", fishQuote("__fish_seen_subcommand_from completion"))
	fmt.Fprintf(w, "complete -c builder -n %s -F\n", fishQuote("__fish_seen_subcommand_from build load save"))
}

func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

func runCompletion(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("completion", g)
	usage := "builder completion bash|zsh|fish\n\n" +
		"Print a shell completion script for commands, options and local image names.\n\n" +
		"Examples:\n" +
		"  source <(builder completion bash)          # in ~/.bashrc\n" +
		"  builder completion zsh > \"${fpath[1]}/_builder\"\n" +
		"  builder completion fish > ~/.config/fish/completions/builder.fish"
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("builder completion needs a shell: bash, zsh or fish")
	}
	var write func(io.Writer, []completionCommand)
	switch fs.Arg(0) {
	case "bash":
		write = writeBashCompletion
	case "zsh":
		write = writeZshCompletion
	case "fish":
		write = writeFishCompletion
	default:
		return usagef("builder completion: unknown shell %q: use bash, zsh or fish", fs.Arg(0))
	}
	cmds, err := completionData(ctx)
	if err != nil {
		return err
	}
	write(os.Stdout, cmds)
	return nil
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
)

// commandTable returns the commands table. It is set once by init, which
// breaks the initialization cycle between the table and the commands
// (docs, completion) that list it.
var commandTable func() []command

func init() { commandTable = func() []command { return commands } }

// docRoot is the --root default the reference shows, whoever generates it.
const docRoot = "/var/lib/builder"

// helpText runs a command with --help and returns what it printed. The
// commands print their usage to os.Stderr, so helpText points os.Stdout and
// os.Stderr at a pipe for the call; it is only for the docs and completion
// commands, which run nothing else at the same time.
func helpText(ctx context.Context, c command) (string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("capture help: %w", err)
	}
	var buf bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(&buf, r)
	}()
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = w, w
	_ = c.run(ctx, &globals{root: docRoot}, []string{"--help"}) // --help may count as a usage error
	os.Stdout, os.Stderr = stdout, stderr
	w.Close()
	wg.Wait()
	r.Close()
	text := buf.String()
	if !strings.HasPrefix(text, "Usage") {
		return "", nil // the command takes no options (version)
	}
	return strings.TrimRight(text, "\n") + "\n", nil
}

// flagDoc is one option of a command as its help lists it.
type flagDoc struct {
	short, long, usage string
}

var flagLine = regexp.MustCompile(`^\s+(?:-(\w), )?--([\w-]+)(?:\[=[^\]]*\])?(?: \w+)?(?:\[=[^\]]*\])?\s{2,}(.*)$`)

// helpFlags reads the options out of a command's help text.
func helpFlags(help string) []flagDoc {
	var out []flagDoc
	for _, l := range strings.Split(help, "\n") {
		if m := flagLine.FindStringSubmatch(l); m != nil {
			out = append(out, flagDoc{short: m[1], long: m[2], usage: m[3]})
		}
	}
	return out
}

// writeCLIReference writes docs/cli.md: every visible command with its
// summary and help text.
func writeCLIReference(ctx context.Context, w io.Writer) error {
	var b strings.Builder
	b.WriteString("# builder command-line reference\n\n")
	b.WriteString("<!-- Generated from the flag definitions by `go run ./cmd/builder docs > docs/cli.md`.\n")
	b.WriteString("     Do not edit: TestCLIReferenceUpToDate fails when this file is stale. -->\n\n")
	b.WriteString("Usage: `builder [--root DIR] [--snapshotter NAME] COMMAND [OPTIONS]`\n\n")
	b.WriteString("`--root` (default `/var/lib/builder` for root, `~/.local/share/builder` otherwise; env `BUILDER_ROOT`)\n")
	b.WriteString("and `--snapshotter` may stand before or after the command name.\n")
	b.WriteString("Exit codes: 0 success, 1 the build or command failed, 2 usage error, 130 interrupted.\n\n")
	cmds := visibleCommands()
	b.WriteString("| Command | Summary |\n| --- | --- |\n")
	for _, c := range cmds {
		name := "`" + c.name + "`"
		if len(c.aliases) > 0 {
			name += " (`" + strings.Join(c.aliases, "`, `") + "`)"
		}
		fmt.Fprintf(&b, "| [%s](#builder-%s) | %s |\n", name, c.name, c.summary)
	}
	for _, c := range cmds {
		fmt.Fprintf(&b, "\n## builder %s\n\n%s.\n", c.name, c.summary)
		if len(c.aliases) > 0 {
			fmt.Fprintf(&b, "\nAliases: %s.\n", strings.Join(c.aliases, ", "))
		}
		help, err := helpText(ctx, c)
		if err != nil {
			return err
		}
		if help != "" {
			fmt.Fprintf(&b, "\n```text\n%s```\n", help)
		}
		if c.name == "build" {
			b.WriteString(buildxFlagTable(helpFlags(help)))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func visibleCommands() []command {
	var out []command
	for _, c := range commandTable() {
		if !c.hidden {
			out = append(out, c)
		}
	}
	return out
}

func runDocs(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("docs", g)
	usage := "builder docs\n\n" +
		"Print the command-line reference (docs/cli.md) in Markdown, generated from\n" +
		"the commands' flag definitions.\n\n" +
		"Examples:\n" +
		"  go run ./cmd/builder docs > docs/cli.md"
	if help, err := parseCommand(fs, usage, args); help || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("builder docs takes no arguments")
	}
	return writeCLIReference(ctx, os.Stdout)
}

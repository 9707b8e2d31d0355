// Command builder builds container images from Dockerfiles without a daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"builder/build/rootless"
	"builder/build/sandbox"
)

// usageError is a mistake in the command line: exit code 2. It keeps the
// type of an error it wraps.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

// Unwrap returns the error usagef wrapped with %w, if any.
func (e *usageError) Unwrap() error { return errors.Unwrap(e.err) }

// usagef formats a usageError as fmt.Errorf does, %w included.
func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

type command struct {
	name    string
	aliases []string
	summary string
	run     func(ctx context.Context, g *globals, args []string) error
	hidden  bool // left out of the usage, the reference and completion
}

var commands = []command{
	{name: "build", summary: "Build an image from a Dockerfile", run: runBuild},
	{name: "builds", summary: "List, inspect, replay and export the records of past builds", run: runBuilds},
	{name: "images", aliases: []string{"ls"}, summary: "List images in the local store", run: runImages},
	{name: "diff", summary: "Explain how two images differ (exit 1 if they do)", run: runDiff},
	{name: "check", summary: "Verify the store: blob digests, cache records, tagged images", run: runCheck},
	{name: "du", summary: "Show what uses space in the store", run: runDu},
	{name: "prune", summary: "Remove unreferenced data and build cache", run: runPrune},
	{name: "rmi", summary: "Untag images and remove what nothing else uses", run: runRmi},
	{name: "push", summary: "Push a local image to a registry", run: runPush},
	{name: "pull", summary: "Pull an image from a registry into the local store", run: runPull},
	{name: "save", summary: "Write local images to a docker or OCI archive", run: runSave},
	{name: "load", summary: "Load images from a docker or OCI archive", run: runLoad},
	{name: "login", summary: "Store credentials for a registry", run: runLogin},
	{name: "logout", summary: "Remove credentials for a registry", run: runLogout},
	{name: "inspect", summary: "Show an image's config, layers and the steps that made them", run: runInspect},
	{name: "history", summary: "Show the steps that made an image", run: runHistory},
	{name: "tag", summary: "Give a local image another name", run: runTag},
	{name: "emulators", summary: "List the platforms RUN can run (--install registers QEMU's)", run: runEmulators},
	{name: "completion", summary: "Print a shell completion script (bash, zsh, fish)", run: runCompletion},
	{name: "docs", summary: "Print the command-line reference in Markdown", run: runDocs, hidden: true},
	{name: "__complete-images", summary: "Print local image names for the completion scripts", run: runCompleteImages, hidden: true},
	{name: "version", summary: "Print the version", run: runVersion},
}

func main() {
	if sandbox.Reexec() {
		return
	}
	// An unprivileged user's builder runs again inside a user namespace
	// (see docs/rootless.md) before it touches the store.
	if code, ok, err := rootless.Reexec(needsNamespace(os.Args[1:])); ok {
		if err != nil {
			code = exitCode(err)
		}
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err))
}

// exitStatus is an error with an exit code of its own, for commands whose
// codes say more than failed or not (diff: 1 differ, 2 error). A nil err
// prints nothing.
type exitStatus struct {
	code int
	err  error
}

func (e *exitStatus) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// Unwrap returns the error the status is for.
func (e *exitStatus) Unwrap() error { return e.err }

// exitCode prints err and maps it to the process exit code: 0 success,
// 1 the build (or command) failed, 2 the command line was wrong, 130
// interrupted, or the code of an exitStatus.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var es *exitStatus
	if errors.As(err, &es) && es.err == nil {
		return es.code
	}
	if sn := snippet(err); sn != "" {
		fmt.Fprintln(os.Stderr, sn)
	}
	fmt.Fprintln(os.Stderr, "ERROR:", errorText(err))
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		return 2
	case errors.Is(err, context.Canceled):
		return 130
	case es != nil:
		return es.code
	}
	return 1
}

func run(ctx context.Context, args []string) error {
	g, rest, err := parseGlobals(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		printUsage(os.Stderr)
		return usagef("no command given")
	}
	if rest[0] == "help" {
		if len(rest) > 1 { // builder help COMMAND is builder COMMAND --help
			return run(ctx, []string{rest[1], "--help"})
		}
		printUsage(os.Stdout)
		return nil
	}
	for _, c := range commands {
		if c.name == rest[0] || contains(c.aliases, rest[0]) {
			err := c.run(ctx, g, rest[1:])
			var ue *usageError
			if errors.As(err, &ue) && ue.Error() == pflag.ErrHelp.Error() {
				return nil // the command printed its usage for --help
			}
			return err
		}
	}
	return usagef("unknown command %q (see 'builder help')", rest[0])
}

// needsNamespace reports whether the command line names a command that
// works on the store, which a non-root user runs in a user namespace; the
// others (help, version, completion, docs, login, logout, emulators) run
// as they are.
func needsNamespace(args []string) bool {
	_, rest, err := parseGlobals(args)
	if err != nil || len(rest) == 0 {
		return false
	}
	switch rest[0] {
	case "help", "-h", "--help", "version", "completion", "docs", "login", "logout", "emulators", "__complete-images":
		return false
	}
	return true
}

// printUsage writes the list of commands: to stdout when asked for with
// --help, to stderr after a usage error.
func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: builder [--root DIR] COMMAND [OPTIONS]\n\nCommands:")
	for _, c := range commands {
		if !c.hidden {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nGlobal options: --root DIR (env BUILDER_ROOT), --version, -h/--help.")
	fmt.Fprintln(w, "Run 'builder COMMAND --help' for a command's options.")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

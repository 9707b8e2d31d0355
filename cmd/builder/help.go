package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// examples holds each command's --help examples, by flag-set name. Keeping
// them in one table keeps them consistent and easy to review.
var examples = map[string][]string{
	"images":    {"builder images", "builder images -q"},
	"rmi":       {"builder rmi app:1", "builder rmi app:1 app:2", "builder rmi -f 3f2a9c1b0d4e"},
	"diff":      {"builder diff app:1 app:2", "builder diff app:1 oci-archive:app.tar", "builder diff docker://registry.example.com/app:1 app:1", "builder diff --platform linux/amd64,linux/arm64 app:1 app:2"},
	"check":     {"builder check", "builder --root /srv/builder check"},
	"du":        {"builder du"},
	"prune":     {"builder prune", "builder prune --all", "builder prune --filter until=24h --keep-storage 10GB"},
	"push":      {"builder push app:1", "builder push app:1 registry.example.com/team/app:1"},
	"pull":      {"builder pull busybox", "builder pull --platform linux/arm64 registry.example.com/base@sha256:…"},
	"save":      {"builder save -o app.tar app:1", "builder save --format oci-archive -o app.tar app:1 app:2", "builder save -o all.tar $(builder images -q)"},
	"load":      {"builder load -i app.tar", "builder load < app.tar"},
	"login":     {"builder login registry.example.com", "echo \"$TOKEN\" | builder login -u ci --password-stdin registry.example.com"},
	"logout":    {"builder logout registry.example.com"},
	"version":   {"builder version"},
	"emulators": {"builder emulators", "sudo builder emulators --install"},
}

// parseCommand parses a command's flags. For --help it prints the usage, the
// command's examples and its options, and returns help=true.
func parseCommand(fs *pflag.FlagSet, usage string, args []string) (help bool, err error) {
	fs.Usage = func() {
		var ex string
		if lines := examples[fs.Name()]; len(lines) > 0 {
			ex = "\n\nExamples:\n  " + strings.Join(lines, "\n  ")
		}
		fmt.Fprintf(os.Stderr, "Usage: %s%s\n\nOptions:\n%s", usage, ex, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return true, nil
		}
		return false, usagef("%w", err)
	}
	return false, nil
}

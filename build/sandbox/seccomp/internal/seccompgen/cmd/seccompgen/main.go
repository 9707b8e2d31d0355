// Command seccompgen writes package seccomp's table from Docker's default
// profile; package seccomp runs it through go:generate.
//
// Usage: seccompgen -o seccomp_gen.go
package main

import (
	"flag"
	"fmt"
	"os"

	"builder/build/sandbox/seccomp/internal/seccompgen"
)

func main() {
	out := flag.String("o", "seccomp_gen.go", "file to write")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "seccompgen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	m, err := seccompgen.FindModules(".")
	if err != nil {
		return err
	}
	src, err := seccompgen.Generate(m)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, src, 0o644); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

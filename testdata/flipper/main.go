// Command flipper is the attacker of the sandbox's mount race tests, built
// statically and run by a RUN that shares a cache mount with the victim
// steps. In the directory DIR it makes "sub" a directory and "link" a
// symlink to "/", writes "started", and then swaps the two names with
// renameat2(RENAME_EXCHANGE) until "done" appears or SECONDS pass. It
// prints the number of swaps and removes "started" and "done" on exit.
// With MIRROR, it first creates sub/MIRROR, so that a path through sub
// exists whichever way sub points when MIRROR exists on the host too.
//
// Usage: flipper DIR SECONDS [MIRROR]
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 3 && len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: flipper DIR SECONDS [MIRROR]")
		os.Exit(2)
	}
	dir := os.Args[1]
	secs, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	os.Remove(p("done"))
	// A run killed while flipping may have left the two names swapped.
	if fi, err := os.Lstat(p("sub")); err == nil && !fi.IsDir() {
		if err := unix.Renameat2(unix.AT_FDCWD, p("sub"), unix.AT_FDCWD, p("link"), unix.RENAME_EXCHANGE); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	mirror := ""
	if len(os.Args) == 4 {
		mirror = os.Args[3]
	}
	if err := os.MkdirAll(filepath.Join(p("sub"), mirror), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if fi, err := os.Lstat(p("link")); err == nil && fi.IsDir() {
		if err := os.RemoveAll(p("link")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	} else if err == nil {
		os.Remove(p("link"))
	}
	if err := os.Symlink("/", p("link")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(p("started"), nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.Remove(p("started"))
	defer os.Remove(p("done"))
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	n := 0
	for ; ; n++ {
		if n%1000 == 0 {
			if _, err := os.Lstat(p("done")); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err := unix.Renameat2(unix.AT_FDCWD, p("sub"), unix.AT_FDCWD, p("link"), unix.RENAME_EXCHANGE); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	// Leave "sub" a directory for the next run.
	if fi, err := os.Lstat(p("sub")); err == nil && !fi.IsDir() {
		unix.Renameat2(unix.AT_FDCWD, p("sub"), unix.AT_FDCWD, p("link"), unix.RENAME_EXCHANGE)
	}
	fmt.Println(n)
}

package build

import (
	"context"
	"fmt"
	"strings"

	units "github.com/docker/go-units"

	"builder/build/sandbox"
	"builder/snapshot"
)

// Values of Options.Isolation.
const (
	IsolationAuto       = "auto"
	IsolationNamespaces = sandbox.IsolationNamespaces
	IsolationChroot     = sandbox.IsolationChroot
)

// runIsolation is how a build's RUN steps are isolated and limited, decided once
// per build by setupIsolation.
type runIsolation struct {
	mode    string // IsolationNamespaces or IsolationChroot
	limits  sandbox.Limits
	cgroups *sandbox.CgroupSupport
}

// ResolveIsolation turns an --isolation value into the mode to use: "auto"
// (or "") probes whether mount namespaces work (sandbox.Probe). It returns
// the mode and a one-line explanation for the progress output, which is ""
// for namespaces chosen automatically, the usual case.
func ResolveIsolation(ctx context.Context, want string) (mode, note string, err error) {
	switch want {
	case "", IsolationAuto:
		mode, reason := sandbox.Probe(ctx)
		if mode == IsolationChroot {
			return mode, fmt.Sprintf("isolation: chroot (%s); RUN steps are weakly isolated", reason), nil
		}
		return mode, "", nil
	case IsolationNamespaces:
		return IsolationNamespaces, "", nil
	case IsolationChroot:
		return IsolationChroot, "isolation: chroot (chosen with --isolation=chroot); RUN steps are weakly isolated", nil
	}
	return "", "", fmt.Errorf("isolation %q: use auto, namespaces or chroot", want)
}

// setupIsolation decides the build's isolation and limits, printing which
// mode was chosen and why when it is chroot, and one warning when limits
// were asked for but no cgroup can enforce them (the build then runs
// without them).
func (j *job) setupIsolation(ctx context.Context) error {
	mode, note, err := ResolveIsolation(ctx, j.o.Isolation)
	if err != nil {
		return err
	}
	if mode == IsolationChroot && j.b.snName != snapshot.Naive {
		return fmt.Errorf("chroot isolation needs the naive snapshotter, but the store at %s uses %s snapshots (use a separate --root with --snapshotter naive)",
			j.b.root, j.b.snName)
	}
	if note != "" {
		j.progress.Printf("%s", note)
	}
	iso := &runIsolation{mode: mode, limits: j.o.Limits}
	if !iso.limits.IsZero() {
		sup := sandbox.ProbeCgroups()
		if !sup.Supports(iso.limits) {
			j.progress.Printf("WARNING: %s ignored: no usable cgroup controller (%s)", limitFlags(iso.limits), sup.Reason)
			iso.limits = sandbox.Limits{}
		} else {
			iso.cgroups = &sup
		}
	}
	j.iso = iso
	return nil
}

// limitFlags names the flags that set l, for messages.
func limitFlags(l sandbox.Limits) string {
	var f []string
	if l.Memory != 0 {
		f = append(f, "--memory")
	}
	if l.CPUs != 0 {
		f = append(f, "--cpus")
	}
	if l.Pids != 0 {
		f = append(f, "--pids-limit")
	}
	return strings.Join(f, ", ")
}

// sandboxSpec fills in the isolation and limits of a RUN's spec.
func (j *job) sandboxSpec(spec sandbox.Spec) sandbox.Spec {
	if j.iso != nil {
		spec.Isolation = j.iso.mode
		spec.Limits = j.iso.limits
		spec.Cgroups = j.iso.cgroups
	}
	return spec
}

// withMounts is snapshot.WithMounts, except in chroot isolation, where
// nothing may be mounted: there every set must be the naive snapshotter's
// single bind mount, and fn gets the bound directories themselves (a
// read-only view is then not enforced by the kernel; its callers only
// read).
func (j *job) withMounts(ctx context.Context, sets [][]snapshot.Mount, fn func(roots []string) error) error {
	if j.iso == nil || j.iso.mode != IsolationChroot {
		return snapshot.WithMounts(ctx, sets, fn)
	}
	roots, err := directRoots(sets)
	if err != nil {
		return err
	}
	return fn(roots)
}

// directRoots returns the source directory of every set, each of which
// must be one bind mount.
func directRoots(sets [][]snapshot.Mount) ([]string, error) {
	roots := make([]string, len(sets))
	for i, set := range sets {
		if len(set) != 1 || set[0].Type != "bind" {
			return nil, fmt.Errorf("chroot isolation: snapshot needs a mount (%d mounts, type %q)", len(set), typeOf(set))
		}
		roots[i] = set[0].Source
	}
	return roots, nil
}

func typeOf(set []snapshot.Mount) string {
	if len(set) == 0 {
		return ""
	}
	return set[0].Type
}

// ParseMemory parses a --memory size as the docker CLI does
// (go-units' RAMInBytes): a number of bytes with an optional k, m, g, t or
// p suffix in powers of 1024, optionally followed by b or ib, such as
// "32m" or "1.5GiB". Docker's minimum of 6m applies.
func ParseMemory(s string) (int64, error) {
	n, err := units.RAMInBytes(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("memory %q: want a positive size such as 512m or 2g", s)
	}
	if n < 6<<20 {
		return 0, fmt.Errorf("memory %q: the minimum is 6m", s)
	}
	return n, nil
}

package build

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	units "github.com/docker/go-units"

	"builder/build/sandbox"
	"builder/build/sandbox/cgroup"
	"builder/snapshot"
)

// Values of Options.Isolation.
const (
	IsolationAuto       = "auto"
	IsolationNamespaces = sandbox.IsolationNamespaces
	IsolationChroot     = sandbox.IsolationChroot
)

// runIsolation is how a build's RUN steps are isolated and limited, decided once
// per build by setupIsolation, when the first step that needs it runs (see
// isolation).
type runIsolation struct {
	mode    string // IsolationNamespaces or IsolationChroot
	limits  cgroup.Limits
	cgroups *cgroup.Support
}

// ResolveIsolation turns an --isolation value into the mode to use: "auto"
// (or "") probes whether namespace mode works (sandbox.Probe). It returns
// the mode and a one-line note for the progress output, which is "" for
// namespaces; for chroot, a warning that says why it was chosen and that
// it does not protect the host from the build (see chrootWarning).
func ResolveIsolation(ctx context.Context, want string) (mode, note string, err error) {
	switch want {
	case "", IsolationAuto:
		mode, reason := sandbox.Probe(ctx)
		if mode == IsolationChroot {
			return mode, chrootWarning(reason, sandbox.ProbePIDNamespace(ctx)), nil
		}
		return mode, "", nil
	case IsolationNamespaces:
		return IsolationNamespaces, "", nil
	case IsolationChroot:
		return IsolationChroot, chrootWarning("chosen with --isolation=chroot", sandbox.ProbePIDNamespace(ctx)), nil
	}
	return "", "", fmt.Errorf("isolation %q: use auto, namespaces or chroot", want)
}

// IsolationPicksSnapshotter reports whether an --isolation of want can
// still choose the snapshotter (snapshotter, "" for automatic) of the store
// at root: only "auto" on a store whose snapshotter is not fixed yet. Only
// then does the command line need ResolveIsolation's answer before the
// build; otherwise the build probes when a step first has to run, and a
// fully cached build never does.
func IsolationPicksSnapshotter(want, root, snapshotter string) bool {
	if want != "" && want != IsolationAuto {
		return false
	}
	return snapshotter == "" && snapshot.Kind(filepath.Join(root, "snapshots")) == ""
}

// chrootWarning is the progress line that starts a chroot-mode build: why
// chroot, and what it leaves the build able to do, which depends on
// whether the machine permits a PID namespace (sandbox.IsolationChroot).
func chrootWarning(why string, pidNS bool) string {
	const head = "WARNING: isolation: chroot (%s): RUN steps are not a security boundary: " +
		"they run with the host's user ids (root is the host's root) in a chroot that shares the host's IPC and hostname"
	if pidNS {
		return fmt.Sprintf(head+"; a PID namespace keeps host processes out of their sight and reach", why)
	}
	return fmt.Sprintf(head+", and can signal any host process by its pid "+
		"(no PID namespace here; only kill -1 and signals to other process groups are refused)", why)
}

// isolation returns the build's isolation, deciding it (setupIsolation) on
// the first call: only a step that has to run needs it, so a fully cached
// build never starts the probe's child process (issue 19). A failure is
// not remembered; the next caller tries again.
func (j *job) isolation(ctx context.Context) (*runIsolation, error) {
	j.isoMu.Lock()
	defer j.isoMu.Unlock()
	if j.iso == nil {
		if err := j.setupIsolation(ctx); err != nil {
			return nil, err
		}
	}
	return j.iso, nil
}

// CheckIsolation rejects an --isolation value ResolveIsolation does not
// know, without probing.
func CheckIsolation(want string) error {
	switch want {
	case "", IsolationAuto, IsolationNamespaces, IsolationChroot:
		return nil
	}
	return fmt.Errorf("isolation %q: use auto, namespaces or chroot", want)
}

// checkSnapshotter refuses isolation mode on a store whose snapshotter
// cannot serve it: chroot isolation mounts nothing, so it needs the naive
// snapshotter. Build calls it before any step for a mode given explicitly;
// setupIsolation for the mode the probe finds.
func (j *job) checkSnapshotter(mode string) error {
	if mode == IsolationChroot && j.b.snName != snapshot.Naive {
		return fmt.Errorf("chroot isolation needs the naive snapshotter, but the store at %s uses %s snapshots (use a separate --root with --snapshotter naive)",
			j.b.root, j.b.snName)
	}
	return nil
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
	if err := j.checkSnapshotter(mode); err != nil {
		return err
	}
	if note != "" {
		j.progress.Printf("%s", note)
	}
	// Every RUN gets a cgroup for its device allowlist where one can be
	// made, limits or not: probe once for the whole build.
	sup := cgroup.Probe()
	iso := &runIsolation{mode: mode, limits: j.o.Limits, cgroups: &sup}
	if !iso.limits.IsZero() && !sup.Supports(iso.limits) {
		j.progress.Printf("WARNING: %s ignored: no usable cgroup controller (%s)", limitFlags(iso.limits), sup.Reason)
		iso.limits = cgroup.Limits{}
	}
	j.iso = iso
	return nil
}

// limitFlags names the flags that set l, for messages.
func limitFlags(l cgroup.Limits) string {
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
func (j *job) sandboxSpec(ctx context.Context, spec sandbox.Spec) (sandbox.Spec, error) {
	iso, err := j.isolation(ctx)
	if err != nil {
		return spec, err
	}
	spec.Isolation = iso.mode
	spec.Limits = iso.limits
	spec.Cgroups = iso.cgroups
	return spec, nil
}

// withMounts is snapshot.WithMounts, except in chroot isolation, where
// nothing may be mounted: there every set must be the naive snapshotter's
// single bind mount, and fn gets the bound directories themselves (a
// read-only view is then not enforced by the kernel; its callers only
// read).
func (j *job) withMounts(ctx context.Context, sets [][]snapshot.Mount, fn func(roots []string) error) error {
	iso, err := j.isolation(ctx)
	if err != nil {
		return err
	}
	if iso.mode != IsolationChroot {
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

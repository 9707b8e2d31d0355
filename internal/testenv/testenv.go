// Package testenv is the one place where a test decides what to do when
// the machine lacks something it needs: root, a tool, overlayfs, usable
// cgroups, a pseudo-terminal, a port. On a developer's machine such a
// test is skipped; with BUILDER_TEST_REQUIRE_ROOT set, as CI sets it, it
// fails instead, so that CI cannot pass by skipping (restic's
// internal/test/vars.go does the same).
//
// A test that is skipped for another reason (a helper process re-executed
// by its own test, a seed generator run by hand) is not a missing
// precondition and does not come here.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireEnv is the variable that turns skips into failures.
const RequireEnv = "BUILDER_TEST_REQUIRE_ROOT"

// Required reports whether a missing precondition fails tests.
func Required() bool { return os.Getenv(RequireEnv) != "" }

// Skip stops t for a missing precondition described by format and args:
// a skip, or under Required a failure.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s, and %s is set: a skip would hide this", msg, RequireEnv)
	}
	t.Skip(msg)
}

// RequireRoot stops t (see Skip) unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root")
	}
}

// RequireTool returns the path of the command tool, or stops t (see Skip)
// when it is not installed.
func RequireTool(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		Skip(t, "%s is not installed (.ci/run installs it)", tool)
	}
	return p
}

// OptionalTool returns the path of the command tool for a cross-check
// that a test makes when it can. When tool is missing, it fails t under
// Required, and otherwise logs that the check is left out and returns ok
// false: the rest of the test still runs.
func OptionalTool(t testing.TB, tool string) (path string, ok bool) {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p, true
	}
	if Required() {
		t.Fatalf("%s is not installed (.ci/run installs it), and %s is set", tool, RequireEnv)
	}
	t.Logf("%s is not installed: its cross-check is left out", tool)
	return "", false
}

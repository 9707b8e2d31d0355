package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSkipFailsWhenRequired runs a test that skips, in a child process,
// with and without RequireEnv, and checks that it passes as skipped only
// without.
func TestSkipFailsWhenRequired(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") != "" {
		t.Skip("child")
	}
	for _, c := range []struct {
		env      string
		wantFail bool
	}{{"", false}, {"1", true}} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestChildSkips$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", RequireEnv+"="+c.env)
		out, err := cmd.CombinedOutput()
		failed := err != nil
		if failed != c.wantFail {
			t.Errorf("%s=%q: failed %v, want %v\n%s", RequireEnv, c.env, failed, c.wantFail, out)
		}
		if !c.wantFail && !strings.Contains(string(out), "--- SKIP") {
			t.Errorf("%s=%q: not skipped\n%s", RequireEnv, c.env, out)
		}
	}
}

// TestChildSkips is the child of TestSkipFailsWhenRequired.
func TestChildSkips(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "" {
		t.Skip("run by TestSkipFailsWhenRequired")
	}
	RequireTool(t, "builder-no-such-tool")
	t.Error("RequireTool returned for a missing tool")
}

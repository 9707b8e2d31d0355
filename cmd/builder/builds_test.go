package main

import (
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"builder/build/buildtest"
	"builder/build/record"
)

// buildIDs, ages and durations vary from run to run; golden outputs mask them.
var (
	buildIDs  = regexp.MustCompile(`\b[0-9a-f]{12}\b`)
	durations = regexp.MustCompile(`\b\d+\.\ds\b`)
)

// stdoutOf runs builder and returns its stdout, failing on a non-zero exit.
func stdoutOf(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("builder %q: %v\n%s%s", args, err, out, errb.String())
	}
	return string(out)
}

// inspectBuild reads one record through builds inspect.
func inspectBuild(t *testing.T, root, id string) record.Record {
	t.Helper()
	var recs []record.Record
	if err := json.Unmarshal([]byte(stdoutOf(t, nil, "--root", root, "builds", "inspect", id)), &recs); err != nil || len(recs) != 1 {
		t.Fatalf("builds inspect %s: %v (%d records)", id, err, len(recs))
	}
	return recs[0]
}

// TestCLIBuildRecords builds once successfully with a secret build-arg
// and once failing, then reads the records back with every builds
// command: ls (golden, timings masked), inspect, logs, export, prune by
// the GC limits, rm; --no-record and BUILDER_NO_RECORD leave none.
func TestCLIBuildRecords(t *testing.T) {
	buildtest.RequireRoot(t)
	base := buildtest.BusyboxRegistry(t)
	root := t.TempDir()
	const secret = "s3cr3t-value-4711"
	good := writeCase(t, "FROM "+base+"\nARG TOKEN\nRUN echo building; test -n \"$TOKEN\"\nCOPY hi.txt /hi.txt\n",
		map[string]string{"hi.txt": "hi\n"})
	if out, code := cli(t, "--root", root, "build", "--build-arg", "TOKEN="+secret, "-t", "rec:1", good); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	bad := writeCase(t, "FROM "+base+"\nRUN echo first line; echo oops >&2; exit 3\n", map[string]string{})
	if out, code := cli(t, "--root", root, "build", "--build-arg=TOKEN="+secret, "-t", "rec:2", bad); code != 1 {
		t.Fatalf("failing build: exit %d, want 1\n%s", code, out)
	}
	if out, code := cli(t, "--root", root, "build", "--no-record", "--build-arg", "TOKEN=x", good); code != 0 {
		t.Fatalf("build --no-record: exit %d\n%s", code, out)
	}
	if out, code := cliWith(t, nil, []string{"BUILDER_NO_RECORD=1"}, "--root", root, "build", "--build-arg", "TOKEN=x", good); code != 0 {
		t.Fatalf("build with BUILDER_NO_RECORD=1: exit %d\n%s", code, out)
	}

	ls := stdoutOf(t, nil, "--root", root, "builds", "ls")
	masked := columnGapsRe.ReplaceAllString(durations.ReplaceAllString(recordAges.ReplaceAllString(buildIDs.ReplaceAllString(ls, "<id>"), "<age>"), "<dur>"), "  ")
	golden := filepath.Join("testdata", "golden", "builds-ls.golden")
	if os.Getenv("BUILDER_UPDATE_GOLDEN") == "1" {
		os.WriteFile(golden, []byte(masked), 0o644)
	}
	if want, err := os.ReadFile(golden); err != nil || masked != string(want) {
		t.Errorf("builds ls =\n%s\nwant (%s)\n%s", masked, golden, want)
	}
	ids := strings.Fields(stdoutOf(t, nil, "--root", root, "builds", "ls", "-q", "--no-trunc"))
	if len(ids) != 2 {
		t.Fatalf("builds ls -q: %q, want the failed and the good build", ids)
	}
	failed, ok := inspectBuild(t, root, ids[0][:8]), inspectBuild(t, root, ids[1])

	if ok.State != record.Completed || ok.Image == "" || len(ok.Steps) != 4 || ok.Dockerfile == "" || ok.Context == "" ||
		!strings.Contains(strings.Join(ok.Command, " "), "--build-arg TOKEN=<value ") {
		t.Errorf("good build's record: %+v", ok)
	}
	if failed.State != record.Failed || !strings.Contains(failed.Error, "RUN echo first line") || !strings.Contains(failed.Error, "exit code: 3") {
		t.Errorf("failed build's record: state %s, error %q", failed.State, failed.Error)
	}
	last := failed.Steps[len(failed.Steps)-1]
	if last.State != record.StepFailed || last.Error == "" || last.Lines < 2 {
		t.Errorf("failed step: %+v", last)
	}
	// The failed RUN's complete output, replayed for its step alone.
	logs := stdoutOf(t, nil, "--root", root, "builds", "logs", "--step", "2", ids[0][:6])
	for _, want := range []string{"#2 [stage-0 2/2] RUN echo first line", "first line", "oops", "#2 ERROR: "} {
		if !strings.Contains(logs, want) {
			t.Errorf("builds logs --step 2 lacks %q:\n%s", want, logs)
		}
	}
	if logs := stdoutOf(t, nil, "--root", root, "builds", "logs", ids[1]); !strings.Contains(logs, "building") || !strings.Contains(logs, "#4 DONE") {
		t.Errorf("builds logs of the good build:\n%s", logs)
	}
	// No record holds the build-arg's value.
	filepath.WalkDir(filepath.Join(root, record.Dir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if dt, _ := os.ReadFile(p); strings.Contains(string(dt), secret) {
				t.Errorf("%s holds the build-arg value", p)
			}
		}
		return nil
	})
	trace := filepath.Join(t.TempDir(), "trace.json")
	stdoutOf(t, nil, "--root", root, "builds", "export", ids[1][:10], "-o", trace)
	var tr struct {
		TraceEvents []struct {
			Ph  string `json:"ph"`
			Dur *int64 `json:"dur"`
		} `json:"traceEvents"`
	}
	if dt, err := os.ReadFile(trace); err != nil || json.Unmarshal(dt, &tr) != nil {
		t.Fatalf("trace: %v", err)
	}
	var slices int
	for _, e := range tr.TraceEvents {
		if e.Ph == "X" && e.Dur != nil {
			slices++
		}
	}
	if slices != 4 {
		t.Errorf("trace has %d complete events, want one per step (4)", slices)
	}
	for _, args := range [][]string{{"builds", "inspect", "zz"}, {"builds", "logs", "ffffffffffff"}, {"builds", "rm", "../x"}} {
		if out, code := cli(t, append([]string{"--root", root}, args...)...); code != 1 || strings.Count(out, "\n") != 1 {
			t.Errorf("builder %q: exit %d, want one error line and 1:\n%s", args, code, out)
		}
	}

	// GC keeps BUILDER_RECORDS_KEEP records: the newest.
	if out, code := cliWith(t, nil, []string{"BUILDER_RECORDS_KEEP=1"}, "--root", root, "prune"); code != 0 || !strings.Contains(out, "1 build records") {
		t.Errorf("prune with BUILDER_RECORDS_KEEP=1: exit %d\n%s", code, out)
	}
	if got := strings.Fields(stdoutOf(t, nil, "--root", root, "builds", "ls", "-q", "--no-trunc")); len(got) != 1 || got[0] != ids[0] {
		t.Errorf("after prune: %q, want only %s", got, ids[0])
	}
	stdoutOf(t, nil, "--root", root, "builds", "rm", ids[0][:5])
	if got := stdoutOf(t, nil, "--root", root, "builds", "ls", "-q"); got != "" {
		t.Errorf("after rm: %q", got)
	}
	// Automatic GC after each build applies the limits too, even with
	// cache GC off; the running build's own record counts and stays.
	for range 2 {
		if out, code := cliWith(t, nil, []string{"BUILDER_RECORDS_KEEP=1"}, "--root", root, "build", "--gc-keep-storage", "0", "--build-arg", "TOKEN=x", good); code != 0 {
			t.Fatalf("build: exit %d\n%s", code, out)
		}
	}
	if got := strings.Fields(stdoutOf(t, nil, "--root", root, "builds", "ls", "-q")); len(got) != 1 {
		t.Errorf("after two builds with BUILDER_RECORDS_KEEP=1: %q, want one record", got)
	}
}

// columnGapsRe is tabwriter's runs of spaces, whose width follows the masked columns.
var columnGapsRe = regexp.MustCompile(` {2,}`)

// recordAges are the STARTED column's values.
var recordAges = regexp.MustCompile(`\b(\d+ (year|month|day|hour|minute)s?|seconds) ago\b`)

// TestCLIBuildRecordSignals stops builds stuck on a registry that never
// answers: SIGINT and SIGTERM leave a record that reads interrupted,
// SIGKILL one that reads unfinished, with its running step unfinished.
func TestCLIBuildRecordSignals(t *testing.T) {
	buildtest.RequireRoot(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // never answered
		}
	}()
	ctx := writeCase(t, "FROM "+l.Addr().String()+"/stuck:1\nRUN true\n", map[string]string{})
	for _, tc := range []struct {
		sig   syscall.Signal
		state string
	}{
		{syscall.SIGINT, record.Interrupted},
		{syscall.SIGTERM, record.Interrupted},
		{syscall.SIGKILL, record.Unfinished},
	} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			root := t.TempDir()
			cmd := exec.Command(binary, "--root", root, "build", "--insecure-registry", l.Addr().String(), ctx)
			var out buildtest.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var id string
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if ids := strings.Fields(stdoutOf(t, nil, "--root", root, "builds", "ls", "-q", "--no-trunc")); len(ids) == 1 {
					id = ids[0]
					if r := inspectBuild(t, root, id); r.State == record.Running && len(r.Steps) > 0 {
						break
					}
				}
			}
			if id == "" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no running record appeared\n%s", out.String())
			}
			cmd.Process.Signal(tc.sig)
			cmd.Wait()
			r := inspectBuild(t, root, id)
			if r.State != tc.state {
				t.Errorf("after %v: state %s, want %s\n%s", tc.sig, r.State, tc.state, out.String())
			}
			if tc.state == record.Unfinished && r.Steps[0].State != record.Unfinished {
				t.Errorf("after SIGKILL: first step %+v, want unfinished", r.Steps[0])
			}
			if tc.state == record.Interrupted && (r.End.IsZero() || r.Error == "") {
				t.Errorf("interrupted record without end or error: %+v", r)
			}
		})
	}
}

// A context path with control characters is quoted in builds ls, and a
// --build-arg value or URL password never reaches the recorded command line.
func TestBuildRowAndRedaction(t *testing.T) {
	row := newBuildRow(&record.Record{ID: strings.Repeat("a", 32), ContextSource: "/tmp/x\x1b[2J\nfake"}, false, time.Now())
	if strings.ContainsAny(row.Name, "\x1b\n") || row.ID != "aaaaaaaaaaaa" {
		t.Errorf("row %+v", row)
	}
	redact := func(v string) string { return "value " + strings.Repeat("0", len(v)%3) }
	got := strings.Join(redactArgs([]string{"--build-arg", "A=pw1", "--build-arg=B=pw2", "--build-arg", "C",
		"https://user:pw3@example.com/r.git#main", "--label", "x=pw4"}, redact), " ")
	for _, secret := range []string{"pw1", "pw2", "pw3"} {
		if strings.Contains(got, secret) {
			t.Errorf("redacted command line %q holds %s", got, secret)
		}
	}
	if !strings.Contains(got, "A=<value") || !strings.Contains(got, " C ") || !strings.Contains(got, "user:xxxxx@example.com") || !strings.Contains(got, "x=pw4") {
		t.Errorf("redacted command line %q", got)
	}
}

package build

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"builder/build/buildtest"
)

// The tests of this file race RUN --mount against renameat2(2)
// RENAME_EXCHANGE of a directory "sub" with a symlink to "/", the attack of
// issue 12: in a cache shared with a parallel stage (the attacker is a
// static program in that stage) and in the context directory (a concurrent
// writer on the host). Every mount source and target must be resolved
// inside its root by file descriptor, so that whatever the interleaving,
// a RUN sees only its own cache or context, and nothing lands on the host.

// buildFlipper compiles testdata/flipper statically into dir.
func buildFlipper(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "flipper"), "../testdata/flipper")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build flipper: %v\n%s", err, out)
	}
}

// raceCase writes a case directory whose Dockerfile runs the flipper in
// stage "flip" on the cache "race" (mounted at /c), with sub/CANARY made
// first if mirror is set, while stage "victim"
// waits for it to start and then runs the given RUN instructions; a last
// step tells the flipper to stop. The victim stage has ARG CANARY and
// appends what its steps saw to /seen, which the result image holds.
func raceCase(t *testing.T, runs []string, mirror bool) string {
	t.Helper()
	dir := t.TempDir()
	ctxDir := filepath.Join(dir, "context")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	buildFlipper(t, ctxDir)
	var df strings.Builder
	df.WriteString("ARG BASE\nFROM $BASE AS flip\nARG CANARY\n")
	m := ""
	if mirror {
		m = " $CANARY"
	}
	df.WriteString("RUN --mount=type=cache,id=race,target=/c --mount=type=bind,source=flipper,target=/flipper /flipper /c 120" + m + " > /flips\n")
	df.WriteString("FROM $BASE AS victim\nARG CANARY\n")
	df.WriteString(`RUN --mount=type=cache,id=race,target=/c i=0; while [ ! -e /c/started ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; touch /seen` + "\n")
	for _, r := range runs {
		df.WriteString("RUN " + r + "\n")
	}
	df.WriteString("RUN --mount=type=cache,id=race,target=/c touch /c/done\n")
	df.WriteString("FROM $BASE\nCOPY --from=flip /flips /\nCOPY --from=victim /seen /\n")
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// seeRun is a RUN that looks through its mount at /x for the host canary
// directory, records "N host" or "N own" in /seen, and tries to write a
// file into the canary directory and over the canary.
func seeRun(mount string, n int) string {
	return fmt.Sprintf(`%s if [ -e "/x$CANARY/canary" ]; then echo "%d host"; else echo "%d own"; fi >> /seen; `+
		`echo pwned > "/x$CANARY/pwned-%d" 2>/dev/null; echo pwned > "/x$CANARY/canary" 2>/dev/null; true`, mount, n, n, n)
}

// checkSeen fails the test for every step that recorded the host in the
// /seen file of res's image, and for a /flips file (the flipper's count)
// that is there but does not count any swap; it returns how many steps
// recorded anything.
func checkSeen(t *testing.T, res *Result) int {
	t.Helper()
	rootfs := unpack(t, res.Image).rootfs
	if flips, err := os.ReadFile(filepath.Join(rootfs, "flips")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(flips))); err != nil || n == 0 {
			t.Errorf("the flipper swapped %q times", flips)
		}
	}
	seen := readFile(t, rootfs, "seen")
	lines := strings.Fields(strings.ReplaceAll(seen, "\n", " "))
	for i := 1; i < len(lines); i += 2 {
		if lines[i] == "host" {
			t.Errorf("step %s saw the host's root through its mount", lines[i-1])
		}
	}
	return len(lines) / 2
}

// TestSecurityCacheSourceRace runs RUN --mount=type=cache,source=sub steps
// while a parallel stage flips sub of the shared cache with a symlink to
// "/". Old code bind-mounted the path it had checked, and about one step in
// four got the host's root at /x and wrote into it. Each step must see the
// cache, the host canary must stay as it was, and the build must succeed.
func TestSecurityCacheSourceRace(t *testing.T) {
	buildtest.RequireRoot(t)
	f := newFixture(t)
	canary, check := canaryDir(t)
	const steps = 24
	var runs []string
	for i := 1; i <= steps; i++ {
		runs = append(runs, seeRun("--mount=type=cache,id=race,source=sub,target=/x", i))
	}
	res, log, err := f.build(raceCase(t, runs, false), func(o *Options) {
		o.BuildArgs["CANARY"] = canary
		o.NoCache = true
	})
	check()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log)
	}
	if n := checkSeen(t, res); n != steps {
		t.Errorf("%d steps recorded what they saw, want %d", n, steps)
	}
}

// TestSecurityCacheTargetRace mounts tmpfs filesystems on /c/sub/CANARY/dN,
// under a cache mounted at /c, while a parallel stage flips sub with a
// symlink to "/"; sub/CANARY exists in the cache as CANARY does on the host.
// Old code created a missing mountpoint by path string after resolving it,
// so a flip in between made it on the host, in the canary directory
// (before pivot_root, "/" is the host's). Whatever the interleaving, the
// canary directory must stay as it was; each build must succeed or fail
// with an error naming its Dockerfile line. Old code fails a build when sub
// is a symlink at a check, ending it, so the test runs several builds.
func TestSecurityCacheTargetRace(t *testing.T) {
	buildtest.RequireRoot(t)
	f := newFixture(t)
	canary, check := canaryDir(t)
	const builds, steps, mounts = 6, 4, 8
	var runs []string
	for i := 1; i <= steps; i++ {
		r := "--mount=type=cache,id=race,target=/c"
		for j := 1; j <= mounts; j++ {
			r += fmt.Sprintf(" --mount=type=tmpfs,target=/c/sub$CANARY/d%d-%d", i, j)
		}
		runs = append(runs, r+fmt.Sprintf(` echo "%d own" >> /seen`, i))
	}
	dir := raceCase(t, runs, true)
	ok := 0
	for b := range builds {
		res, log, err := f.build(dir, func(o *Options) {
			o.BuildArgs["CANARY"] = canary
			o.NoCache = true
		})
		if ents, _ := os.ReadDir(canary); len(ents) != 1 {
			t.Errorf("build %d created mountpoints on the host", b)
			break
		}
		if err != nil {
			if !strings.Contains(err.Error(), "Dockerfile:") {
				t.Errorf("build %d: error without its Dockerfile line: %v\n%s", b, err, log)
			}
			t.Logf("build %d: %v", b, err)
			continue
		}
		ok++
		checkSeen(t, res)
	}
	check()
	if !t.Failed() && ok == 0 {
		t.Errorf("no build succeeded")
	}
}

// TestSecurityContextBindRace flips the context directory's sub with a
// symlink to "/" from a goroutine (a concurrent writer of the context, as
// in CI checkouts) while builds bind-mount source=sub/CANARY, read-only and
// read-write. Old code bind-mounted, or made the overlay of, the path it had
// checked and so gave about one step in four the host's canary directory;
// such a step fails its build on purpose, saying so. The context's checksum
// refuses sub while it is a symlink, failing that build with an error that
// names its Dockerfile line, so one-step builds are repeated (a bounded
// number of times) until enough steps reached their mount.
func TestSecurityContextBindRace(t *testing.T) {
	buildtest.RequireRoot(t)
	f := newFixture(t)
	canary, check := canaryDir(t)
	dir := t.TempDir()
	ctxDir := filepath.Join(dir, "context")
	// Through sub, a symlink to "/", the host path sub/CANARY leads to the
	// canary; resolved inside the context, to a copy of its directories
	// without the canary file.
	for _, d := range []string{filepath.Join(ctxDir, "sub", canary), filepath.Join(ctxDir, canary)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/", filepath.Join(ctxDir, "link")); err != nil {
		t.Fatal(err)
	}
	write := func(rw bool) {
		mount := "--mount=type=bind,source=sub$CANARY,target=/x"
		if rw {
			mount += ",rw"
		}
		df := "ARG BASE\nFROM $BASE\nARG CANARY\n" +
			"RUN " + mount + ` m=SAW; if [ -e /x/canary ]; then echo "$m-HOST-CANARY"; exit 7; fi; m=RAN; echo "$m-OWN"` + "\n"
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var flips int
	var flipErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		sub, link := filepath.Join(ctxDir, "sub"), filepath.Join(ctxDir, "link")
		for ; ; flips++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := unix.Renameat2(unix.AT_FDCWD, sub, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE); err != nil {
				flipErr = err
				return
			}
			// The time from a source's check to its mount spans many
			// flips.
			time.Sleep(100 * time.Microsecond)
		}
	}()
	const want, maxBuilds = 24, 120
	ran, builds := 0, 0
	for ; builds < maxBuilds && ran < want; builds++ {
		write(builds%2 == 1)
		_, log, err := f.build(dir, func(o *Options) {
			o.BuildArgs["CANARY"] = canary
			o.NoCache = true
		})
		if strings.Contains(log, "SAW-HOST-CANARY") {
			t.Errorf("build %d: its step saw the host's canary through its bind mount: %v", builds, err)
			break
		}
		ran += strings.Count(log, "RAN-OWN")
		if err != nil && !strings.Contains(err.Error(), "Dockerfile:") {
			t.Errorf("build %d: error without its Dockerfile line: %v\n%s", builds, err, log)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d flips, %d builds, %d steps reached their mount", flips, builds, ran)
	if flipErr != nil {
		t.Errorf("flip: %v", flipErr)
	}
	check()
	if !t.Failed() && ran < want {
		t.Errorf("only %d steps of %d builds reached their mount, want %d", ran, builds, want)
	}
}

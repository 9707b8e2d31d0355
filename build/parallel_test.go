package build

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestParallelStages checks that independent stages overlap: each stage's
// RUN starts before the other one finishes. An unused stage is not built.
func TestParallelStages(t *testing.T) {
	f := newFixture(t)
	res, log := f.mustBuild(copyCase(t, "builds/parallel"))
	lines := strings.Split(log, "\n")
	find := func(re string) int {
		r := regexp.MustCompile(re)
		for i, l := range lines {
			if r.MatchString(l) {
				return i
			}
		}
		t.Fatalf("log lacks /%s/:\n%s", re, log)
		return -1
	}
	leftStart, rightStart := find(`^#\d+ [0-9.]+ left-start`), find(`^#\d+ [0-9.]+ right-start`)
	leftN := regexp.MustCompile(`^#(\d+) `).FindStringSubmatch(lines[leftStart])[1]
	rightN := regexp.MustCompile(`^#(\d+) `).FindStringSubmatch(lines[rightStart])[1]
	leftDone, rightDone := find(`^#`+leftN+` DONE`), find(`^#`+rightN+` DONE`)
	if rightStart > leftDone || leftStart > rightDone {
		t.Errorf("stages did not overlap (left start %d done %d, right start %d done %d):\n%s",
			leftStart, leftDone, rightStart, rightDone, log)
	}
	if strings.Contains(log, "exit 9") {
		t.Errorf("the unused stage was built:\n%s", log)
	}
	u := unpack(t, res.Image)
	if readFile(t, u.rootfs, "left") != "left\n" || readFile(t, u.rootfs, "right") != "right\n" {
		t.Errorf("final stage lacks the files copied from both stages")
	}
}

// BenchmarkParallelStages reports the wall time of two independent
// one-second stages in seconds: about 1 when they run in parallel, about 2
// when they run one after the other.
func BenchmarkParallelStages(b *testing.B) {
	f := newFixture(b)
	dir := copyCase(b, "builds/parallel")
	var walls []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		f.mustBuild(dir, func(o *Options) { o.NoCache = true })
		walls = append(walls, time.Since(start))
	}
	b.ReportMetric(median(walls).Seconds(), "wall-s(1-stage=1s)")
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"builder/build/buildtest"
)

// BenchmarkCLICopyBaseline runs issue 19's COPY workloads (cold, one file
// changed, no-op; the context of BenchmarkCLIWorkloads) with this tree's
// builder and with the binary $BENCH_BASELINE, interleaved round by round
// on stores of their own, so that a change is measured against the binary
// before it on the same machine at the same load. It prints the medians,
// the ratio new / baseline per workload and the load average of each
// round. Without BENCH_BASELINE it is skipped.
//
//	git stash; make build; cp bin/builder /tmp/builder-old; git stash pop
//	cd cmd/builder && BENCH_BASELINE=/tmp/builder-old go test -run '^$' -bench CopyBaseline -benchtime 1x .
func BenchmarkCLICopyBaseline(b *testing.B) {
	baseline := os.Getenv("BENCH_BASELINE")
	if baseline == "" {
		b.Skip("BENCH_BASELINE names no baseline binary")
	}
	buildtest.RequireRoot(b)
	rounds := 3
	if v, err := fmt.Sscan(os.Getenv("BENCH_ROUNDS"), &rounds); v != 1 || err != nil || rounds < 1 {
		rounds = 3
	}
	base := buildtest.BusyboxRegistry(b)
	bn := &bench{b: b, base: base}
	dir := bn.dir("ARG BASE\nFROM $BASE\nCOPY . /app\n")
	ctxBytes := genMixedContext(b, dir, 20000)
	changed := filepath.Join(dir, "d000", "f00000.txt")
	bins := []struct{ name, path string }{{"baseline", baseline}, {"new", binary}}
	var loads []string
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			roots := map[string]string{}
			for _, v := range bins {
				roots[v.name] = b.TempDir()
				bn.runBin(v.path, "COPY "+mb(ctxBytes)+" cold, "+v.name, roots[v.name], dir)
			}
			f, err := os.OpenFile(changed, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(f, "round %d of %s\n", r, time.Now())
			f.Close()
			for _, v := range bins {
				bn.runBin(v.path, "COPY one file changed, "+v.name, roots[v.name], dir)
			}
			for _, v := range bins {
				bn.runBin(v.path, "COPY no-op, "+v.name, roots[v.name], dir)
			}
			loads = append(loads, loadavg())
		}
	}
	b.StopTimer()
	bn.print(os.Stdout, rounds)
	fmt.Printf("\nnew / baseline (medians):\n")
	for _, w := range []string{"COPY " + mb(ctxBytes) + " cold", "COPY one file changed", "COPY no-op"} {
		o, n := median(bn.times[w+", baseline"]), median(bn.times[w+", new"])
		fmt.Printf("%-40s %.2f\n", w, float64(n)/float64(o))
	}
	fmt.Printf("load average after each round: %s\n", strings.Join(loads, ", "))
}

// runBin is bench.run with another builder binary.
func (bn *bench) runBin(bin, name, root, dir string) {
	args := []string{"--root", root, "build", "--progress", "plain", "--build-arg", "BASE=" + bn.base, dir}
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		bn.b.Fatalf("%s: %v\n%s", name, err, out.String())
	}
	bn.add(name, d, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
}

func loadavg() string {
	dt, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(dt)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"builder/build/buildtest"
)

// BenchmarkCLIRunCost measures the per-RUN-step cost and the no-op rebuild
// of issue 19: the 20-RUN workload of BenchmarkCLIWorkloads, cold on a new
// store and then rebuilt fully cached, by this package's binary and, when
// BENCH_OLD names another builder binary, by that one too, interleaved
// round by round (alternating which goes first) so that both see the same
// load. It prints, per binary and workload, the median and minimum wall
// time and the median CPU time (user + system of the builder and every
// process it waited for: the sandbox inits, the NAT) over BENCH_ROUNDS
// rounds (default 5), the peak RSS, the load average before and after,
// and the floors of the same run. CPU time is the steadier figure on a shared machine:
// wall time there mostly measures the other users. BENCH_NETWORK sets
// --network (default: the builder's default, a private network behind a
// userspace NAT where one is installed).
func BenchmarkCLIRunCost(b *testing.B) {
	buildtest.RequireRoot(b)
	rounds := 5
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	bins := []struct{ name, path string }{{"new", binary}}
	if old := os.Getenv("BENCH_OLD"); old != "" {
		bins = append(bins, struct{ name, path string }{"old", old})
	}
	var extra []string
	if n := os.Getenv("BENCH_NETWORK"); n != "" {
		extra = append(extra, "--network", n)
	}
	bn := &bench{b: b, base: buildtest.BusyboxRegistry(b)}
	dir := bn.dir(runs20Dockerfile())
	cpu := map[string][]time.Duration{}
	load0 := loadAverage()

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			for k := range bins {
				bin := bins[(k+r)%len(bins)]
				root := b.TempDir()
				for _, w := range []string{"20 RUN steps, cold", "20 RUN steps, no-op rebuild"} {
					name := bin.name + ": " + w
					wall, used, rss := runCost(b, bin.path, name, root, bn.base, dir, extra)
					bn.add(name, wall, rss)
					cpu[name] = append(cpu[name], used)
				}
			}
		}
	}
	b.StopTimer()
	load1 := loadAverage()
	bn.floorsRun()

	fmt.Printf("\nper-RUN cost through the CLI, %d rounds interleaved, load average %s before, %s after\n", rounds, load0, load1)
	fmt.Printf("%-44s %10s %10s %10s %10s\n", "workload", "median", "min", "CPU median", "peak RSS")
	for _, name := range bn.order {
		c, rss := "-", "-"
		if v := cpu[name]; len(v) > 0 {
			c = round(median(v))
		}
		if m := maxOf(bn.rss[name]); m > 0 {
			rss = fmt.Sprintf("%d MB", m/1024)
		}
		fmt.Printf("%-44s %10s %10s %10s %10s\n", name, round(median(bn.times[name])), round(minOf(bn.times[name])), c, rss)
	}
}

// runCost runs one build of dir with bin on the store root and returns its
// wall time, CPU time (its own and that of the processes it waited for)
// and the peak RSS of the largest of them in KiB.
func runCost(b *testing.B, bin, name, root, base, dir string, extra []string) (wall, cpu time.Duration, rssKiB int64) {
	args := append([]string{"--root", root, "build", "--progress", "plain", "--build-arg", "BASE=" + base}, extra...)
	cmd := exec.Command(bin, append(args, dir)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall = time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v\n%s", name, err, out.String())
	}
	if strings.Contains(name, "no-op") && strings.Count(out.String(), "CACHED") != 20 {
		b.Fatalf("%s: not fully cached\n%s", name, out.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return wall, cpu, ru.Maxrss
}

// loadAverage returns the three figures of /proc/loadavg.
func loadAverage() string {
	dt, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(dt))[:3], " ")
}

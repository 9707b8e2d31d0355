package build

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/buildtest"
)

// BenchmarkBuildTwoPlatforms builds testdata/bench/runs20 (the steps
// workload) from a linux/amd64 + linux/arm64 busybox for linux/amd64
// alone, linux/arm64 alone (its RUN steps under QEMU) and both at once,
// each cold (--no-cache), and reports the medians. It also times what
// QEMU alone costs: the arm64 busybox running one shell command, outside
// any build, against the native one, times 20 steps.
func BenchmarkBuildTwoPlatforms(b *testing.B) {
	buildtest.RequireRoot(b)
	base := buildtest.MultiArchRegistry(b)
	dir := filepath.Join("..", "testdata", "bench", "runs20")
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	opts := func(noCache bool, ps ...v1.Platform) Options {
		return Options{ContextDir: filepath.Join(dir, "context"), Dockerfile: filepath.Join(dir, "Dockerfile"),
			BuildArgs: map[string]string{"BASE": base}, NoCache: noCache, Platforms: ps}
	}
	bl, err := New(Config{Root: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Pull both bases once, so the figures are about the steps.
	if _, err := buildFile(ctx, bl, opts(false, amd64, arm64)); err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name string
		ps   []v1.Platform
		ds   []time.Duration
	}{{name: "amd64", ps: []v1.Platform{amd64}}, {name: "arm64", ps: []v1.Platform{arm64}}, {name: "both", ps: []v1.Platform{amd64, arm64}}}
	for i := 0; i < b.N; i++ {
		for c := range cases {
			start := time.Now()
			if _, err := buildFile(ctx, bl, opts(true, cases[c].ps...)); err != nil {
				b.Fatal(err)
			}
			cases[c].ds = append(cases[c].ds, time.Since(start))
		}
	}
	for _, c := range cases {
		b.ReportMetric(float64(median(c.ds).Milliseconds()), c.name+"-cold-ms")
	}
	native, emulated := busyboxRuns(b, "amd64"), busyboxRuns(b, "arm64")
	b.ReportMetric(float64(native.Milliseconds()), "native-20-sh-ms")
	b.ReportMetric(float64(emulated.Milliseconds()), "qemu-20-sh-ms")
}

// busyboxRuns times 20 runs of `sh -c 'echo step > file'` by the busybox
// of arch, straight on the host (through binfmt_misc for a foreign one).
func busyboxRuns(b *testing.B, arch string) time.Duration {
	dir := b.TempDir()
	bb := filepath.Join(dir, "busybox")
	if err := os.WriteFile(bb, buildtest.ForeignBusybox(b, arch), 0o755); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < 20; i++ {
		if out, err := exec.Command(bb, "sh", "-c", "echo step > "+filepath.Join(dir, "out")).CombinedOutput(); err != nil {
			b.Fatalf("%s busybox: %v\n%s", arch, err, out)
		}
	}
	return time.Since(start)
}

package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/pgzip"
	"golang.org/x/sys/unix"

	"builder/build/buildtest"
)

// BenchmarkCLIWorkloads runs issue 19's workloads through the builder
// binary as a user would, each on its own store, and prints a table of
// medians over BENCH_ROUNDS rounds (default 3) with the peak RSS of the
// builder process and the floors of this machine measured in the same
// run. Nothing is asserted beyond every build succeeding and every
// rebuild being fully cached; docs/performance.md reads the table.
// BENCH_SKIP_BIG=1 leaves out the two 512 MiB RUN steps.
func BenchmarkCLIWorkloads(b *testing.B) {
	buildtest.RequireRoot(b)
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	base := buildtest.BusyboxRegistry(b)
	bn := &bench{b: b, base: base}

	runs := bn.dir(runs20Dockerfile())
	copyDir := bn.dir("ARG BASE\nFROM $BASE\nCOPY . /app\n")
	ctxBytes := genMixedContext(b, copyDir, 20000)
	big := bn.dir("ARG BASE\nFROM $BASE\n" +
		"RUN head -c 536870912 /dev/urandom > /random\n" +
		"RUN yes 'the quick brown fox jumps over the lazy dog 0123456789' | head -c 536870912 > /text\n")
	parallel := bn.dir("ARG BASE\nFROM $BASE AS a\nRUN sleep 2 && echo a > /a\n" +
		"FROM $BASE AS b\nRUN sleep 2 && echo b > /b\n" +
		"FROM $BASE\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n")
	changed := filepath.Join(copyDir, "d000", "f00000.txt")

	// BENCH_OLD names another builder binary (e.g. main's) to run
	// interleaved with this one, each on its own stores, rows marked [old]
	// and [new]; the order alternates by round. BENCH_ONLY (a comma list
	// of runs, copy, big, parallel, floors) picks the workloads.
	bins := []struct{ path, tag string }{{binary, ""}}
	if old := os.Getenv("BENCH_OLD"); old != "" {
		bins = []struct{ path, tag string }{{binary, " [new]"}, {old, " [old]"}}
	}
	only := func(group string) bool {
		v := os.Getenv("BENCH_ONLY")
		return v == "" || slices.Contains(strings.Split(v, ","), group)
	}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			for k := range bins {
				bin := bins[(k+r)%len(bins)]
				bn.bin, bn.tag = bin.path, bin.tag
				if only("runs") {
					root := b.TempDir()
					bn.run("20 RUN steps (5 files + symlink each), cold", root, runs)
					bn.run("20 RUN steps, no-op rebuild", root, runs)
				}
				if only("copy") {
					root := b.TempDir()
					bn.run("COPY 20,000 files / "+mb(ctxBytes)+", cold", root, copyDir)
					bn.run("COPY, no-op rebuild", root, copyDir)
					f, err := os.OpenFile(changed, os.O_APPEND|os.O_WRONLY, 0)
					if err != nil {
						b.Fatal(err)
					}
					fmt.Fprintf(f, "round %d of %s\n", r, time.Now())
					f.Close()
					bn.run("COPY, one file changed", root, copyDir)
					bn.run("COPY, export to an OCI archive", root, copyDir, "-o", "type=oci,dest="+filepath.Join(b.TempDir(), "app.tar"))
				}
				if only("big") && os.Getenv("BENCH_SKIP_BIG") == "" {
					bn.run("RUN 512 MiB random + RUN 512 MiB text, cold", b.TempDir(), big)
				}
				if only("parallel") {
					bn.run("two parallel stages with sleep 2, cold", b.TempDir(), parallel)
				}
			}
			if only("floors") {
				bn.floors(copyDir)
			}
		}
	}
	b.StopTimer()
	bn.print(os.Stdout, rounds)
}

// bench holds the samples of BenchmarkCLIWorkloads, by row in the order
// rows were first measured.
type bench struct {
	b     *testing.B
	base  string
	bin   string // the builder binary run
	tag   string // added to row names: " [old]", " [new]" or ""
	order []string
	times map[string][]time.Duration
	rss   map[string][]int64 // KiB
	cpu   map[string][]time.Duration
}

func (bn *bench) add(name string, d time.Duration, rssKiB int64) {
	if bn.times == nil {
		bn.times, bn.rss = map[string][]time.Duration{}, map[string][]int64{}
	}
	if _, ok := bn.times[name]; !ok {
		bn.order = append(bn.order, name)
	}
	bn.times[name] = append(bn.times[name], d)
	bn.rss[name] = append(bn.rss[name], rssKiB)
}

// dir writes dockerfile into a new directory whose context is the
// directory itself (the Dockerfile is .dockerignored so that it does not
// change the COPY).
func (bn *bench) dir(dockerfile string) string {
	d := bn.b.TempDir()
	for name, data := range map[string]string{"Dockerfile": dockerfile, ".dockerignore": "Dockerfile\n.dockerignore\n"} {
		if err := os.WriteFile(filepath.Join(d, name), []byte(data), 0o644); err != nil {
			bn.b.Fatal(err)
		}
	}
	return d
}

// run builds dir with the builder binary on the store root, timing the
// whole process and reading its peak RSS from its rusage.
func (bn *bench) run(name, root, dir string, extra ...string) {
	args := append([]string{"--root", root, "build", "--progress", "plain", "--build-arg", "BASE=" + bn.base}, extra...)
	name += bn.tag
	cmd := exec.Command(bn.bin, append(args, dir)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		bn.b.Fatalf("%s: %v\n%s", name, err, out.String())
	}
	if strings.Contains(name, "no-op") && strings.Count(out.String(), "CACHED") == 0 {
		bn.b.Fatalf("%s: nothing CACHED\n%s", name, out.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	bn.add(name, d, ru.Maxrss)
	// CPU time (user + system, the builder and what it waited for): what
	// a loaded machine distorts least.
	if bn.cpu == nil {
		bn.cpu = map[string][]time.Duration{}
	}
	bn.cpu[name] = append(bn.cpu[name], time.Duration(ru.Utime.Nano()+ru.Stime.Nano()))
}

// floors measures this machine's floors for the workloads: a process in
// new namespaces, an overlay mount, and one pass over the COPY context
// (tar alone, tar + sha256, tar + gzip level 1 on every core), plus gzip
// and sha256 rates on 64 MiB buffers.
func (bn *bench) floors(ctxDir string) {
	b := bn.b
	bn.floorsRun()
	bn.add("floor: tar of the COPY context (hot)", tarPass(b, ctxDir, io.Discard), 0)
	bn.add("floor: tar + sha256 of the COPY context", tarPass(b, ctxDir, sha256.New()), 0)
	bn.add("floor: tar + pgzip -1 (2 MiB x cores) of the COPY context", tarPass(b, ctxDir, pgzipDiscard()), 0)
	bn.floorsCompress()
}

// floorsRun measures the floors of a RUN step: a process in new
// namespaces and an overlay mount + umount, medians of 20.
func (bn *bench) floorsRun() {
	b := bn.b
	const n = 20
	var ds []time.Duration
	for range n {
		start := time.Now()
		if out, err := exec.Command("unshare", "--mount", "--uts", "--ipc", "--net", "--pid", "--fork", "true").CombinedOutput(); err != nil {
			b.Fatalf("unshare: %v\n%s", err, out)
		}
		ds = append(ds, time.Since(start))
	}
	bn.add("floor: unshare -mu -i -n -p -f true", median(ds), 0)

	ds = ds[:0]
	od := b.TempDir()
	for _, s := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(od, s), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	merged := filepath.Join(od, "merged")
	data := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", od, od, od)
	for range n {
		start := time.Now()
		if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
			b.Fatal(err)
		}
		if err := unix.Unmount(merged, 0); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	bn.add("floor: overlay mount + umount", median(ds), 0)
}

// floorsCompress measures gzip and sha256 rates on 64 MiB buffers.
func (bn *bench) floorsCompress() {
	random, text := make([]byte, 64<<20), make([]byte, 64<<20)
	fillRandom(random, 7)
	fillText(text, 7)
	for _, c := range []struct {
		name string
		w    func() io.WriteCloser
	}{
		{"gzip -1 (klauspost, one stream)", func() io.WriteCloser { w, _ := gzip.NewWriterLevel(io.Discard, 1); return w }},
		{"pgzip -1 (2 MiB x cores)", pgzipDiscard},
		{"pgzip default (current layers)", func() io.WriteCloser {
			w, _ := pgzip.NewWriterLevel(io.Discard, pgzip.DefaultCompression)
			_ = w.SetConcurrency(1<<20, 2*runtime.NumCPU())
			return w
		}},
	} {
		for _, in := range []struct {
			kind string
			buf  []byte
		}{{"random", random}, {"text", text}} {
			w := c.w()
			start := time.Now()
			_, _ = w.Write(in.buf)
			_ = w.Close()
			bn.add("floor: 64 MiB "+in.kind+", "+c.name, time.Since(start), 0)
		}
	}
	start := time.Now()
	sha256.Sum256(random)
	bn.add("floor: 64 MiB sha256", time.Since(start), 0)
	// A child's peak RSS (rusage) starts from this process's, whose mm the
	// child shares until exec: give the buffers (dead by now) back before
	// the next round.
	debug.FreeOSMemory()
}

func pgzipDiscard() io.WriteCloser {
	w, _ := pgzip.NewWriterLevel(io.Discard, 1)
	_ = w.SetConcurrency(2<<20, runtime.NumCPU())
	return w
}

// tarPass times `tar -c` of dir with its output copied into w (closed at
// the end when it is a WriteCloser).
func tarPass(b *testing.B, dir string, w io.Writer) time.Duration {
	cmd := exec.Command("tar", "-C", dir, "-cf", "-", ".")
	start := time.Now()
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(w, out); err != nil {
		b.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	if c, ok := w.(io.Closer); ok {
		_ = c.Close()
	}
	return time.Since(start)
}

func (bn *bench) print(w io.Writer, rounds int) {
	fmt.Fprintf(w, "\nworkloads through the CLI, medians of %d rounds (%d cores)\n", rounds, runtime.NumCPU())
	fmt.Fprintf(w, "%-62s %10s %10s %10s %10s\n", "workload", "median", "min", "peak RSS", "CPU")
	for _, name := range bn.order {
		ts := bn.times[name]
		rss, cpu := "-", "-"
		if m := maxOf(bn.rss[name]); m > 0 {
			rss = fmt.Sprintf("%d MB", m/1024)
		}
		if cs := bn.cpu[name]; len(cs) > 0 {
			cpu = round(median(cs))
		}
		fmt.Fprintf(w, "%-62s %10s %10s %10s %10s\n", name, round(median(ts)), round(minOf(ts)), rss, cpu)
	}
}

func round(d time.Duration) string {
	if d < 10*time.Millisecond {
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func minOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

func maxOf(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func mb(n int64) string { return fmt.Sprintf("%d MB", n/1000000) }

// runs20Dockerfile is 20 RUN steps that each write five small files and
// a symlink.
func runs20Dockerfile() string {
	var s strings.Builder
	s.WriteString("ARG BASE\nFROM $BASE\n")
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&s, "RUN mkdir /s%d && for f in 1 2 3 4 5; do echo step %d file $f > /s%d/$f; done && ln -s 1 /s%d/link\n", i, i, i, i)
	}
	return s.String()
}

// genMixedContext writes files files below dir, 100 to a directory, half
// text and half random, with sizes from 0 to 19 KiB and one file in 2,000
// of 2 MiB, and returns the bytes written (about 212 MB for 20,000).
func genMixedContext(b *testing.B, dir string, files int) int64 {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	var total int64
	buf := make([]byte, 2<<20)
	for i := 0; i < files; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		size := rng.IntN(19 << 10)
		if i%2000 == 1999 {
			size = 2 << 20
		}
		name := fmt.Sprintf("f%05d.txt", i)
		if i%2 == 0 {
			fillText(buf[:size], uint64(i))
		} else {
			name = fmt.Sprintf("f%05d.bin", i)
			fillRandom(buf[:size], uint64(i))
		}
		if err := os.WriteFile(filepath.Join(d, name), buf[:size], 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(size)
	}
	return total
}

func fillRandom(buf []byte, seed uint64) {
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)}).Read(buf)
}

// benchWords are the words of the generated text files.
var benchWords = strings.Fields("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people")

// fillText fills buf with lines of words and numbers, text that gzip
// shrinks about as much as source code.
func fillText(buf []byte, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	for i := 0; i < len(buf); {
		var w string
		switch n := rng.IntN(12); {
		case n == 0:
			w = "\n"
		case n == 1:
			w = strconv.Itoa(rng.IntN(100000)) + " "
		default:
			w = benchWords[rng.IntN(len(benchWords))] + " "
		}
		i += copy(buf[i:], w)
	}
}

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"builder/snapshot"

	"builder/build/buildtest"
	"builder/build/sandbox/cgroup"
	"builder/internal/testenv"
)

func TestMain(m *testing.M) {
	if Reexec() {
		return
	}
	// Every temporary directory of this package's tests (t.TempDir, the
	// sandbox's scratch dir) lies below tmp, so a mount left on the host
	// by these tests shows up below it, whatever other test processes
	// mount meanwhile.
	tmp, err := os.MkdirTemp("", "sandbox-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("TMPDIR", tmp)
	code := m.Run()
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var left []string
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, tmp) {
			left = append(left, l)
		}
	}
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "mounts left below %s:\n%s\n", tmp, strings.Join(left, "\n"))
		code = 1
	} else {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

func needRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
}

var (
	busyboxOnce    sync.Once
	busyboxPath    string
	busyboxApplets []string
	busyboxErr     error
)

// findBusybox locates a static busybox on the host and lists its applets.
func findBusybox(t testing.TB) (string, []string) {
	t.Helper()
	busyboxOnce.Do(func() {
		busyboxPath, busyboxErr = exec.LookPath("busybox")
		if busyboxErr != nil {
			return
		}
		var out []byte
		out, busyboxErr = exec.Command(busyboxPath, "--list").Output()
		busyboxApplets = strings.Fields(string(out))
	})
	if busyboxErr != nil {
		testenv.Skip(t, "busybox not available: %v", busyboxErr)
	}
	return busyboxPath, busyboxApplets
}

// newRootfs builds a tiny root filesystem: busybox with its applets in /bin,
// and /etc/passwd and /etc/group from testdata. It has /root and /tmp but no
// /proc, /dev, /sys, /etc/hosts or /etc/resolv.conf.
func newRootfs(t testing.TB) string {
	t.Helper()
	bb, applets := findBusybox(t)
	dir := t.TempDir()
	for _, d := range []string{"bin", "etc", "root", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, bb, filepath.Join(dir, "bin/busybox"), 0o755)
	for _, a := range applets {
		if a == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"passwd", "group"} {
		copyFile(t, filepath.Join("testdata/rootfs/etc", f), filepath.Join(dir, "etc", f), 0o644)
	}
	return dir
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkScratch checks that Run left nothing in tmp but its empty scratch
// mountpoint.
func checkScratch(t *testing.T, tmp string) {
	t.Helper()
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) == 0 {
		return // Run failed before making it
	}
	if len(ents) != 1 || ents[0].Name() != "builder-sandbox" {
		t.Fatalf("temp dir holds %v, want only builder-sandbox", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(tmp, "builder-sandbox")); len(ents) != 0 {
		t.Errorf("scratch dir not empty: %v", ents)
	}
}

func bindRoot(dir string) []snapshot.Mount {
	return []snapshot.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}}
}

// tree lists every path under dir with its type and, for files, content, so
// that two calls can tell whether anything changed.
func tree(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %v %d\n", rel, fi.Mode(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestRun(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	t.Setenv("SANDBOX_HOST_ONLY", "leak")
	srcDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(srcDir, "f"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		spec       Spec
		wantOut    string
		wantStderr string
		check      func(t *testing.T, out string)
		wantErr    error  // compared with errors.As for *ExitError, else by message
		errHas     string // substring of the error message
		errIs      error  // an error the error must match with errors.Is
	}{
		{name: "output", spec: Spec{Args: sh("echo hello; echo oops >&2")}, wantOut: "hello\n", wantStderr: "oops\n"},
		{name: "exit code", spec: Spec{Args: sh("echo before; exit 3")}, wantOut: "before\n", wantErr: &ExitError{Code: 3}},
		{name: "killed", spec: Spec{Args: sh("kill -9 $$")}, wantErr: &ExitError{Code: 137, Signal: syscall.SIGKILL}},
		{name: "exec form", spec: Spec{Args: []string{"echo", "a", "b"}}, wantOut: "a b\n"},
		{name: "stdin is /dev/null", spec: Spec{Args: sh("cat; echo done")}, wantOut: "done\n"},
		{
			name:    "env",
			spec:    Spec{Args: sh(`echo "$FOO|$PATH|$HOME|$SANDBOX_HOST_ONLY"`), Env: []string{"FOO=bar baz"}},
			wantOut: "bar baz|" + DefaultPath + "|/root|\n",
		},
		{
			name:    "env keeps PATH and HOME",
			spec:    Spec{Args: sh(`echo "$PATH|$HOME"`), Env: []string{"PATH=/bin", "HOME=/x"}},
			wantOut: "/bin|/x\n",
		},
		{name: "no host env", spec: Spec{Args: []string{"env"}, Env: []string{"A=1"}}, wantOut: "A=1\nPATH=" + DefaultPath + "\nHOME=/root\n"},
		{name: "cwd", spec: Spec{Args: []string{"pwd"}, Cwd: "/tmp"}, wantOut: "/tmp\n"},
		{name: "user default", spec: Spec{Args: sh("id -u; id -g; id -G")}, wantOut: "0\n0\n0\n"},
		{name: "user name", spec: Spec{Args: sh("id -u; id -g; id -G; echo $HOME"), User: "app"}, wantOut: "1000\n1000\n1000 2000 3000\n/home/app\n"},
		{name: "user uid", spec: Spec{Args: sh("id -u; id -g; id -G"), User: "1000"}, wantOut: "1000\n1000\n1000 2000 3000\n"},
		{name: "user uid:gid", spec: Spec{Args: sh("id -u; id -g; id -G"), User: "1000:2000"}, wantOut: "1000\n2000\n2000\n"},
		{name: "user name:group", spec: Spec{Args: sh("id -u; id -g; id -G"), User: "app:tools"}, wantOut: "1000\n3000\n3000\n"},
		{name: "user unknown uid", spec: Spec{Args: sh("id -u; id -g; echo $HOME"), User: "4242"}, wantOut: "4242\n0\n/\n"},
		{name: "user unknown", spec: Spec{Args: []string{"true"}, User: "svc"}, errHas: "unable to find user svc: no matching entries in passwd file"},
		{name: "group unknown", spec: Spec{Args: []string{"true"}, User: "app:nogrp"}, errHas: "unable to find group nogrp: no matching entries in group file"},
		{name: "non-root has no capabilities", spec: Spec{Args: sh("grep CapEff /proc/self/status"), User: "app"}, wantOut: "CapEff:\t0000000000000000\n"},
		{name: "root has default capabilities", spec: Spec{Args: sh("grep CapEff /proc/self/status")}, wantOut: "CapEff:\t00000000a80425fb\n"},
		{name: "insecure keeps capabilities", spec: Spec{Args: sh("grep CapEff /proc/self/status"), Insecure: true}, check: func(t *testing.T, out string) {
			if !strings.HasPrefix(out, "CapEff:\t000001ff") {
				t.Errorf("CapEff = %q, want all capabilities", out)
			}
		}},
		{name: "hostname default", spec: Spec{Args: []string{"hostname"}}, wantOut: "builder\n"},
		{name: "hostname", spec: Spec{Args: []string{"hostname"}, Hostname: "box"}, wantOut: "box\n"},
		{name: "fds", spec: Spec{Args: []string{"ls", "/proc/self/fd"}}, wantOut: "0\n1\n2\n3\n"},
		{name: "pid 1 is init", spec: Spec{Args: sh(`echo $$; tr '\0' ' ' </proc/1/cmdline; echo`)}, check: func(t *testing.T, out string) {
			lines := strings.Split(out, "\n")
			if pid, err := strconv.Atoi(lines[0]); err != nil || pid <= 1 {
				t.Errorf("command pid = %q, want > 1", lines[0])
			}
			if len(lines) < 2 || lines[1] != initArg0+" " {
				t.Errorf("pid 1 cmdline = %q, want %q", out, initArg0)
			}
		}},
		{name: "network none", spec: Spec{Args: sh("ls /sys/class/net; cat /sys/class/net/lo/flags"), Network: "none"}, wantOut: "lo\n0x9\n"},
		{name: "network host", spec: Spec{Args: []string{"ls", "/sys/class/net"}}, check: func(t *testing.T, out string) {
			if strings.TrimSpace(out) == "lo" {
				t.Errorf("host network shows only lo: %q", out)
			}
		}},
		{
			name:    "hosts and resolv.conf",
			spec:    Spec{Args: sh("cat /etc/hosts /etc/resolv.conf"), ResolvConf: []byte("nameserver 192.0.2.1\n")},
			wantOut: "127.0.0.1\tlocalhost builder\n::1\tlocalhost ip6-localhost ip6-loopback\nnameserver 192.0.2.1\n",
		},
		{name: "custom hosts", spec: Spec{Args: []string{"cat", "/etc/hosts"}, Hosts: []byte("10.0.0.1 db\n")}, wantOut: "10.0.0.1 db\n"},
		{name: "hosts read-only", spec: Spec{Args: sh("echo x >> /etc/hosts")}, wantErr: &ExitError{Code: 1}},
		{name: "dev", spec: Spec{Args: sh("ls /dev; head -c 3 /dev/zero | wc -c; echo x > /dev/null")}, check: func(t *testing.T, out string) {
			for _, want := range []string{"full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero", "fd"} {
				if !strings.Contains(out, want+"\n") {
					t.Errorf("/dev lacks %s: %q", want, out)
				}
			}
			if !strings.HasSuffix(out, "3\n") {
				t.Errorf("reading /dev/zero: %q", out)
			}
		}},
		{name: "sys read-only", spec: Spec{Args: sh("touch /sys/x")}, wantErr: &ExitError{Code: 1}},
		{name: "proc masked", spec: Spec{Args: sh("wc -c </proc/timer_list; ls /sys/firmware | wc -l; grep -c ' /proc/sys ro,' /proc/self/mountinfo")}, wantOut: "0\n0\n1\n"},
		{name: "zombies reaped", spec: Spec{Args: sh(`(sleep 0.05 &); sleep 0.4; for f in /proc/[0-9]*/stat; do read -r l <$f; case "$l" in *") Z "*) echo "zombie: $l";; esac; done; echo ok`)}, wantOut: "ok\n"},
		{name: "background killed", spec: Spec{Args: sh("sleep 100 & echo started")}, wantOut: "started\n"},
		{name: "missing binary", spec: Spec{Args: []string{"/bin/nope"}}, errHas: `exec: "/bin/nope": stat /bin/nope: no such file or directory`, errIs: fs.ErrNotExist},
		{name: "binary not in PATH", spec: Spec{Args: []string{"nope"}}, errHas: `exec: "nope": executable file not found in $PATH`},
		{name: "not executable", spec: Spec{Args: []string{"/etc/passwd"}}, errHas: `exec: "/etc/passwd"`},
		{
			name: "mounts",
			spec: Spec{
				Args: sh("cat /mnt/data/f; touch /mnt/data/g 2>/dev/null && echo rw || echo ro; echo x > /scratch/a && cat /scratch/a; cat /run/secret"),
				Mounts: []Mount{
					{Type: "tmpfs", Target: "/scratch", Options: []string{"size=1m"}},
					{Type: "bind", Root: srcDir, Target: "/mnt/data", ReadOnly: true},
					{Type: "bind", Root: srcDir, Source: "f", Target: "/run/secret", ReadOnly: true},
				},
			},
			wantOut: "from host\nro\nx\nfrom host\n",
		},
		{name: "bad overlay", spec: Spec{Root: []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/nonexistent"}}}, Args: []string{"true"}}, errHas: "mount overlay: "},
		{name: "bad network", spec: Spec{Args: []string{"true"}, Network: "bridge"}, errHas: `unsupported network mode "bridge"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tree(t, rootfs)
			spec := tt.spec
			if spec.Root == nil {
				spec.Root = bindRoot(rootfs)
			}
			spec.TempDir = t.TempDir()
			var stdout, stderr bytes.Buffer
			spec.Stdout, spec.Stderr = &stdout, &stderr
			err := Run(context.Background(), spec)

			switch want := tt.wantErr.(type) {
			case nil:
				if tt.errHas != "" {
					if err == nil || !strings.Contains(err.Error(), tt.errHas) {
						t.Fatalf("Run error = %v, want %q", err, tt.errHas)
					}
					var se *SetupError
					if tt.errIs != nil && (!errors.Is(err, tt.errIs) || !errors.As(err, &se)) {
						t.Errorf("Run error %v (%T) is not a SetupError matching %v", err, err, tt.errIs)
					}
				} else if err != nil {
					t.Fatalf("Run: %v (stderr %q)", err, stderr.String())
				}
			case *ExitError:
				var got *ExitError
				if !errors.As(err, &got) || *got != *want {
					t.Fatalf("Run error = %#v, want %#v", err, want)
				}
			}
			if tt.check != nil {
				tt.check(t, stdout.String())
			} else if stdout.String() != tt.wantOut {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantOut)
			}
			if tt.wantStderr != "" && stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantStderr)
			}
			if after := tree(t, rootfs); after != before {
				t.Errorf("rootfs changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			checkScratch(t, spec.TempDir)
		})
	}
}

func TestExitErrorMessage(t *testing.T) {
	tests := []struct {
		err  *ExitError
		want string
	}{
		{&ExitError{Code: 1}, "exit code: 1"},
		{&ExitError{Code: 137, Signal: syscall.SIGKILL}, "killed by signal 9"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// TestCwdCreated checks that a missing working directory is created, owned
// by root with mode 0755, and kept.
func TestCwdCreated(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	var out bytes.Buffer
	err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Args: []string{"pwd"}, Cwd: "/work/dir", User: "app", Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "/work/dir\n" {
		t.Errorf("pwd = %q", out.String())
	}
	for _, d := range []string{"work", "work/dir"} {
		fi, err := os.Stat(filepath.Join(rootfs, d))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || fi.Mode().Perm() != 0o755 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: mode %v owner %d:%d, want dir 0755 0:0", d, fi.Mode(), st.Uid, st.Gid)
		}
	}
}

// TestOverlayUpperStaysEmpty runs commands on an overlay root whose lower
// dir lacks every mountpoint, including /etc/hosts in an existing /etc: a
// command that changes nothing must leave the upper dir empty.
func TestOverlayUpperStaysEmpty(t *testing.T) {
	needRoot(t)
	lower := newRootfs(t)
	srcDir := t.TempDir()
	tests := []struct {
		name      string
		script    string
		mounts    []Mount
		wantUpper string // tree of the upper dir, "" for empty
	}{
		{name: "true", script: "true"},
		{name: "mounts under existing dirs", script: "ls /root/.cache /etc/ssl/certs >/dev/null", mounts: []Mount{
			{Type: "tmpfs", Target: "/root/.cache"},
			{Type: "bind", Root: srcDir, Target: "/etc/ssl/certs"},
		}},
		{name: "write", script: "echo x > /etc/new", wantUpper: "etc\netc/new\n"},
		{name: "write in a mountpoint parent", script: "echo x > /root/file", mounts: []Mount{
			{Type: "tmpfs", Target: "/root/.cache"},
		}, wantUpper: "root\nroot/file\n"},
		{name: "mkdir", script: "mkdir /newdir", wantUpper: "newdir\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upper, work := t.TempDir(), t.TempDir()
			root := []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{
				"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work,
			}}}
			var stderr bytes.Buffer
			err := Run(context.Background(), Spec{Root: root, Args: sh(tt.script), Mounts: tt.mounts, Stderr: &stderr})
			if err != nil {
				t.Fatalf("Run: %v (stderr %q)", err, stderr.String())
			}
			if got := listTree(t, upper); got != tt.wantUpper {
				t.Errorf("upper dir:\n%s\nwant:\n%s", got, tt.wantUpper)
			}
		})
	}
}

// TestOverlayStubFallback uses a lower dir whose /etc/resolv.conf is a
// dangling symlink into an existing directory: the stub layer cannot provide
// the mountpoint, so the sandbox creates it through the overlay, which
// copies /var and /var/run up, and the upper dir must still end up empty.
func TestOverlayStubFallback(t *testing.T) {
	needRoot(t)
	lower := newRootfs(t)
	if err := os.MkdirAll(filepath.Join(lower, "var/run"), 0o750); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1500000000, 0)
	for _, d := range []string{"var/run", "var"} {
		if err := os.Chtimes(filepath.Join(lower, d), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../var/run/resolv.conf", filepath.Join(lower, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, script, wantUpper string
	}{
		{"true", "cat /etc/resolv.conf", ""},
		{"write next to the stub", "cat /etc/resolv.conf; touch /var/run/pid", "var\nvar/run\nvar/run/pid\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upper, work := t.TempDir(), t.TempDir()
			var out bytes.Buffer
			err := Run(context.Background(), Spec{
				Root: []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{
					"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work,
				}}},
				Args:       sh(tt.script),
				ResolvConf: []byte("nameserver 192.0.2.7\n"),
				Stdout:     &out,
			})
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != "nameserver 192.0.2.7\n" {
				t.Errorf("resolv.conf = %q", out.String())
			}
			if got := listTree(t, upper); got != tt.wantUpper {
				t.Errorf("upper dir:\n%s\nwant:\n%s", got, tt.wantUpper)
			}
		})
	}
}

// listTree lists the paths under dir, one a line.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b.WriteString(rel + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestOverlayLongOptions mounts an overlay whose options exceed a page.
func TestOverlayLongOptions(t *testing.T) {
	needRoot(t)
	base := newRootfs(t)
	layers := t.TempDir()
	var lowers []string
	for i := range 60 {
		d := filepath.Join(layers, fmt.Sprintf("layer-with-a-rather-long-directory-name-%03d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, d)
	}
	lowers = append(lowers, base)
	opts := "lowerdir=" + strings.Join(lowers, ":")
	if len(opts) < os.Getpagesize() {
		t.Fatalf("options only %d bytes", len(opts))
	}
	// Read-only: the mountpoints come from the stub layer alone.
	var out bytes.Buffer
	err := Run(context.Background(), Spec{
		Root:   []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{opts, "ro"}}},
		Args:   sh("ls / | grep -c '^f0'; touch /x"),
		Stdout: &out,
	})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 1 {
		t.Fatalf("Run on read-only root: %v, want exit code 1 from touch", err)
	}
	if out.String() != "60\n" {
		t.Errorf("files from lower layers = %q, want 60", out.String())
	}

	out.Reset()
	upper, work := t.TempDir(), t.TempDir()
	err = Run(context.Background(), Spec{
		Root:   []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{opts, "upperdir=" + upper, "workdir=" + work}}},
		Mounts: []Mount{{Type: "tmpfs", Target: "/cache"}},
		Args:   sh("ls / | grep -c '^f0'"),
		Stdout: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "60\n" {
		t.Errorf("files from lower layers = %q, want 60", out.String())
	}
}

// initPids returns the pids of sandbox inits that are children of this
// process.
func initPids(t testing.TB) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	me := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		_, rest, _ := bytes.Cut(stat, []byte(") "))
		f := strings.Fields(string(rest))
		if string(bytes.TrimRight(cmdline, "\x00")) == initArg0 && len(f) > 1 && f[1] == me {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processesWithArg returns the pids of processes whose argv has arg.
func processesWithArg(arg string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		for _, a := range bytes.Split(cmdline, []byte{0}) {
			if string(a) == arg {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCancel(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	before := tree(t, rootfs)
	tmp := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &buildtest.SyncBuffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Spec{Root: bindRoot(rootfs), Args: sh("sleep 100.25 & echo started; sleep 100.5"), Stdout: out, TempDir: tmp})
	}()
	waitFor(t, "the command", func() bool {
		return out.String() == "started\n" && len(processesWithArg("100.5")) == 1
	})
	start := time.Now()
	cancel()
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Run took %v to return after cancel", d)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error = %v, want context.Canceled", err)
	}
	if p := append(processesWithArg("100.25"), processesWithArg("100.5")...); len(p) != 0 {
		t.Errorf("processes left: %v", p)
	}
	if p := initPids(t); len(p) != 0 {
		t.Errorf("inits left: %v", p)
	}
	checkScratch(t, tmp)
	// The mounts died with the namespace, so nothing holds the rootfs and
	// the rootfs itself holds no stub (the init was killed before cleaning:
	// only the empty mountpoints may remain, which the caller throws away
	// with the snapshot).
	after := tree(t, rootfs)
	for _, l := range strings.Split(after, "\n") {
		if !strings.Contains(before, l+"\n") && !strings.HasPrefix(l, "proc ") &&
			!strings.HasPrefix(l, "dev ") && !strings.HasPrefix(l, "sys ") &&
			!strings.HasPrefix(l, "etc/hosts ") && !strings.HasPrefix(l, "etc/resolv.conf ") &&
			!strings.HasPrefix(l, ". ") && !strings.HasPrefix(l, "etc ") {
			t.Errorf("unexpected entry after cancel: %s", l)
		}
	}
}

func TestSignalForwarded(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	out := &buildtest.SyncBuffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- Run(context.Background(), Spec{
			Root:   bindRoot(rootfs),
			Args:   sh(`trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.01; done`),
			Stdout: out,
		})
	}()
	waitFor(t, "the trap", func() bool { return out.String() == "ready\n" })
	pids := initPids(t)
	if len(pids) != 1 {
		t.Fatalf("sandbox inits: %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 7 {
		t.Fatalf("Run error = %v, want exit code 7", err)
	}
	if out.String() != "ready\ngot TERM\n" {
		t.Errorf("stdout = %q", out.String())
	}
}

// TestNoLeaks runs many sandboxes and checks that this process keeps its
// fds and that no init survives.
func TestNoLeaks(t *testing.T) {
	needRoot(t)
	rootfs := newRootfs(t)
	countFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	run := func() {
		var out bytes.Buffer
		if err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Args: []string{"true"}, Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		err := Run(context.Background(), Spec{Root: bindRoot(rootfs), Args: []string{"/nope"}, Stdout: os.Stdout})
		if err == nil {
			t.Fatal("missing binary ran")
		}
	}
	run() // warm up: the first exec may open lasting fds
	before := countFDs()
	for range 20 {
		run()
	}
	if after := countFDs(); after != before {
		t.Errorf("fds: %d before, %d after", before, after)
	}
	if p := initPids(t); len(p) != 0 {
		t.Errorf("inits left: %v", p)
	}
}

func BenchmarkRunTrue(b *testing.B) {
	needRoot(b)
	rootfs := newRootfs(b)
	// A build probes cgroups once, for its device allowlists and limits.
	sup := cgroup.Probe()
	spec := Spec{Root: bindRoot(rootfs), Args: []string{"/bin/true"}, TempDir: b.TempDir(), Cgroups: &sup}
	for b.Loop() {
		if err := Run(context.Background(), spec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRunTrueOverlay(b *testing.B) {
	needRoot(b)
	lower := newRootfs(b)
	sup := cgroup.Probe()
	for b.Loop() {
		b.StopTimer()
		upper, work := b.TempDir(), b.TempDir()
		b.StartTimer()
		err := Run(context.Background(), Spec{
			Root: []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{
				"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work,
			}}},
			Args:    []string{"/bin/true"},
			Cgroups: &sup,
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// Package rootless lets an unprivileged user run builder. Reexec starts the
// same binary again in a new user namespace and mount namespace, where the
// user is root (id 0) and the user's subordinate ids from /etc/subuid and
// /etc/subgid are ids 1 to N, so that layers can hold files of any owner
// in that range. Inside, builder works as it does for root: overlayfs
// (kernel 5.11 or later, with the userxattr option), chown, namespaced RUN
// steps; what the kernel still refuses to a user namespace (device nodes,
// a fresh sysfs without a network namespace, cgroups) is handled by the
// packages that meet it.
//
// The re-exec takes two steps, as buildah's unshare does. The process the
// user started (the parent) clones a child with CLONE_NEWUSER|CLONE_NEWNS
// that waits on a pipe while the parent writes its id maps with the setuid
// helpers newuidmap and newgidmap (Debian package uidmap). The child then
// executes itself once more: capabilities are computed at execve, and only
// an execve made after the map exists runs as root of the namespace with
// every capability. The parent forwards signals, waits, and exits with the
// child's code. An environment variable marks each step, so no process
// re-executes twice.
//
// There is no single-id fallback: without a subordinate range, builder
// could only create root-owned files and would fail on the first base
// image with other owners, so Reexec fails and says how to add one.
package rootless

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// stageEnv marks the re-executed processes: stageWait in the first child,
// which waits for its id maps, and "ready:PPID" in the second, which runs
// builder.
const (
	stageEnv   = "_BUILDER_ROOTLESS"
	stageWait  = "wait"
	stageReady = "ready"
)

// syncFD is the read end of the pipe on which the first child waits; the
// parent writes one byte once the maps are written, or closes it on error.
const syncFD = 3

// forwarded are the signals the parent passes on to the child.
var forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// InNamespace reports whether this process is builder running as root of
// its rootless user namespace, started by Reexec. Callers use it to keep
// per-user defaults (such as the store under the user's home) although the
// effective uid is 0.
func InNamespace() bool {
	v, _, _ := strings.Cut(os.Getenv(stageEnv), ":")
	return v == stageReady
}

// Reexec must be called early in main, after sandbox.Reexec and before any
// store work. Its result depends on the process:
//
//   - root, or builder already inside its namespace: it returns handled
//     false and does nothing (inside, it first re-arms the parent-death
//     signal, which the second execve cleared).
//   - the first child of a re-exec: it waits for the id maps and executes
//     itself again; it never returns unless that fails.
//   - an unprivileged user's builder, with want set: it runs the same
//     command line in the namespace and returns handled true with the
//     child's exit code (128+N if a signal N killed it), or with an error
//     when the namespace could not be set up (no subordinate ids, no
//     newuidmap, the kernel refuses user namespaces).
//   - with want false (commands that need no store) it returns handled
//     false.
func Reexec(want bool) (code int, handled bool, err error) {
	stage, ppid, _ := strings.Cut(os.Getenv(stageEnv), ":")
	switch stage {
	case stageWait:
		return 1, true, childWait()
	case stageReady:
		if err := rearmParentDeath(ppid); err != nil {
			return 1, true, err
		}
		return 0, false, nil
	}
	if os.Geteuid() == 0 || !want {
		return 0, false, nil
	}
	code, err = runParent()
	return code, true, err
}

// childWait is the first child: it waits until the parent has written the
// id maps, then executes the binary again so that it starts as root of the
// namespace with full capabilities.
func childWait() error {
	f := os.NewFile(syncFD, "rootless-sync")
	var b [1]byte
	n, _ := f.Read(b[:])
	f.Close()
	if n != 1 {
		return errors.New("rootless: the parent could not set up the user namespace")
	}
	if err := unix.Setresgid(0, 0, 0); err != nil {
		return fmt.Errorf("rootless: become root in the user namespace: %w", err)
	}
	if err := unix.Setresuid(0, 0, 0); err != nil {
		return fmt.Errorf("rootless: become root in the user namespace: %w", err)
	}
	env := setEnv(os.Environ(), stageEnv, stageReady+":"+strconv.Itoa(os.Getppid()))
	err := unix.Exec("/proc/self/exe", os.Args, env)
	return fmt.Errorf("rootless: re-execute in the user namespace: %w", err)
}

// rearmParentDeath makes the kernel kill this process when the parent that
// started the namespace (pid ppid) dies, and checks that it is still alive.
func rearmParentDeath(ppid string) error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("rootless: set parent-death signal: %w", err)
	}
	if ppid != "" && strconv.Itoa(os.Getppid()) != ppid {
		return errors.New("rootless: the parent process is gone")
	}
	if os.Geteuid() != 0 {
		return errors.New("rootless: the user namespace did not map this user to root")
	}
	return nil
}

// currentUser returns the invoking user, by number if the passwd database
// does not know it.
func currentUser() User {
	u := User{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if pw, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		u.Name = pw.Username
	}
	return u
}

// runParent runs the command line in a new user namespace and returns the
// child's exit code.
func runParent() (int, error) {
	u := currentUser()
	m, err := LookupMapping(u, "/etc/subuid", "/etc/subgid")
	if err != nil {
		return 1, fmt.Errorf("rootless: %w (builder needs one to run without root; as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s)", err, nameOr(u))
	}
	helpers := map[string]string{}
	for _, h := range []string{"newuidmap", "newgidmap"} {
		p, err := exec.LookPath(h)
		if err != nil {
			return 1, fmt.Errorf("rootless: %s not found (install Debian's uidmap package): %w", h, err)
		}
		helpers[h] = p
	}
	tmp, err := privateTempDir(u.UID)
	if err != nil {
		return 1, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 1, fmt.Errorf("rootless: create pipe: %w", err)
	}
	defer w.Close()

	cmd := exec.Command("/proc/self/exe")
	cmd.Args = os.Args
	cmd.Env = setEnv(setEnv(os.Environ(), stageEnv, stageWait), "TMPDIR", tmp)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{r}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}

	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	// Pdeathsig fires when the forking thread exits, so it stays locked
	// until the child is reaped.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err = cmd.Start()
	r.Close()
	if err != nil {
		return 1, fmt.Errorf("rootless: start in a user namespace (are unprivileged user namespaces "+
			"allowed? sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, AppArmor): %w", err)
	}
	if err := writeMaps(cmd.Process.Pid, m, helpers); err != nil {
		w.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 1, err
	}
	if _, err := w.Write([]byte{1}); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 1, fmt.Errorf("rootless: release the child: %w", err)
	}
	w.Close()

	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return 1, fmt.Errorf("rootless: wait for the child: %w", err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// writeMaps runs newuidmap and newgidmap for pid.
func writeMaps(pid int, m Mapping, helpers map[string]string) error {
	for _, h := range []struct {
		name   string
		ranges []IDRange
	}{{"newuidmap", m.UIDs}, {"newgidmap", m.GIDs}} {
		var out bytes.Buffer
		cmd := exec.CommandContext(context.Background(), helpers[h.name], helperArgs(pid, h.ranges)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("rootless: %s %s: %w: %s", h.name, strings.Join(cmd.Args[1:], " "), err, bytes.TrimSpace(out.Bytes()))
		}
	}
	return nil
}

// privateTempDir returns <temp>/builder-UID, created mode 0700 if missing
// and checked to be a directory of uid's that no one else may write. The
// child uses it as TMPDIR, so that its scratch directories never meet
// those root's builder made in the shared temp directory.
func privateTempDir(uid uint32) (string, error) {
	dir := filepath.Join(os.TempDir(), "builder-"+strconv.FormatUint(uint64(uid), 10))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("rootless: create temp dir: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", fmt.Errorf("rootless: check temp dir: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uid || st.Mode&0o077 != 0 {
		return "", fmt.Errorf("rootless: %s is not a directory private to uid %d", dir, uid)
	}
	return dir, nil
}

func nameOr(u User) string {
	if u.Name != "" {
		return u.Name
	}
	return strconv.FormatUint(uint64(u.UID), 10)
}

// setEnv returns env with key set to value, replacing earlier settings.
func setEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != key {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

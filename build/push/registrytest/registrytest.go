// Package registrytest runs Debian's docker-registry (the CNCF
// distribution registry) on loopback for tests, open or behind htpasswd
// basic auth. Each registry keeps its blobs in the test's temporary
// directory and is stopped, by its PID, when the test ends.
package registrytest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"builder/internal/testenv"
)

// Binary is where Debian's docker-registry package installs the server.
const Binary = "/usr/bin/docker-registry"

// Registry is a running registry.
type Registry struct {
	Addr     string // 127.0.0.1:PORT
	User     string // "" for an open registry
	Password string
	Dir      string // storage root
}

// Options choose the registry's flavour.
type Options struct {
	// Auth puts the registry behind htpasswd basic auth with a fresh user
	// and password (Registry.User, Registry.Password).
	Auth bool
}

// Shared returns the registry .ci/run started for the whole test run, the
// open one (BUILDER_TEST_REGISTRY=host:port) or, with Auth, the htpasswd one
// (BUILDER_TEST_REGISTRY_AUTH=user:password@host:port). Where the variable is
// unset it starts one with Start. A shared registry outlives the test and
// has no Dir: tests must push to repository names of their own (Repo).
func Shared(t testing.TB, o Options) *Registry {
	t.Helper()
	if !o.Auth {
		if addr := os.Getenv("BUILDER_TEST_REGISTRY"); addr != "" {
			return &Registry{Addr: addr}
		}
		return Start(t, o)
	}
	v := os.Getenv("BUILDER_TEST_REGISTRY_AUTH")
	if v == "" {
		return Start(t, o)
	}
	cred, addr, ok := strings.Cut(v, "@")
	user, password, ok2 := strings.Cut(cred, ":")
	if !ok || !ok2 {
		t.Fatalf("BUILDER_TEST_REGISTRY_AUTH=%q: want user:password@host:port", v)
	}
	return &Registry{Addr: addr, User: user, Password: password}
}

// Repo returns a repository name on r that no other test run uses, e.g.
// "127.0.0.1:5000/rt-1732700000123/app", for tests on a shared registry.
func (r *Registry) Repo(name string) string {
	return fmt.Sprintf("%s/t%d/%s", r.Addr, time.Now().UnixNano(), name)
}

// Start starts a registry and waits until it answers. It skips the test
// when docker-registry (or, with Auth, htpasswd from apache2-utils) is not
// installed, unless BUILDER_TEST_REQUIRE_ROOT is set, as in CI, where that
// is a failure.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	need(t, Binary)
	dir := t.TempDir()
	r := &Registry{Dir: filepath.Join(dir, "storage")}
	auth := ""
	if o.Auth {
		htpasswd := need(t, "htpasswd")
		r.User, r.Password = "ci", fmt.Sprintf("pw-%d", time.Now().UnixNano())
		out, err := exec.Command(htpasswd, "-Bbn", r.User, r.Password).Output()
		if err != nil {
			t.Fatalf("htpasswd: %v", err)
		}
		pwfile := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pwfile, []byte(strings.TrimSpace(string(out))+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", pwfile)
	}
	// A free port: bind, note it, release it for the registry. Retried
	// if another process takes it in between.
	var lastErr error
	for try := 0; try < 5; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r.Addr = l.Addr().String()
		l.Close()
		cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n%s",
			r.Dir, r.Addr, auth)
		cfgPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(dir, fmt.Sprintf("registry-%d.log", try))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(Binary, "serve", cfgPath)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		release, err := startOnParkedThread(cmd)
		if err != nil {
			logf.Close()
			t.Fatalf("start docker-registry: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			release()
			logf.Close()
		}
		if lastErr = waitReady(r.Addr, exited); lastErr == nil {
			t.Cleanup(stop)
			return r
		}
		stop()
		b, _ := os.ReadFile(logPath)
		lastErr = fmt.Errorf("%w\n%s", lastErr, b)
	}
	t.Fatalf("docker-registry did not start: %v", lastErr)
	return nil
}

// startOnParkedThread starts cmd from a goroutine locked to its own OS
// thread, which stays parked until release is called. Pdeathsig fires when
// the thread that started the child exits, not the process, and the Go
// runtime ends threads at times of its choosing (locked threads whose
// goroutine returns, as snapshot.WithMounts leaves them): started from an
// ordinary goroutine, the registry could be killed in the middle of a test.
// If the test binary dies, the parked thread dies with it and so does the
// registry.
func startOnParkedThread(cmd *exec.Cmd) (release func(), err error) {
	started := make(chan error, 1)
	park := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		err := cmd.Start()
		started <- err
		if err == nil {
			<-park
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { close(park) }) }, nil
}

// waitReady polls GET /v2/ until the registry answers (200 or 401).
func waitReady(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("docker-registry exited")
		default:
		}
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no answer on %s", addr)
}

// DockerConfig writes a docker config.json with r's credentials into a new
// directory, points DOCKER_CONFIG at it for the test and returns it.
func (r *Registry) DockerConfig(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	cfg := `{"auths":{}}`
	if r.User != "" {
		cfg = fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, r.Addr, r.User, r.Password)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	return dir
}

func need(t testing.TB, tool string) string {
	t.Helper()
	return testenv.RequireTool(t, tool)
}

package build

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/build/sshagent"
	"builder/internal/gitserver"
)

// TestRunMountSSH runs `ssh -T` and `git clone` over ssh against an sshd
// on loopback from RUN --mount=type=ssh, once with key files served by
// builder's own agent and once with OpenSSH's ssh-agent forwarded. It
// checks what the RUNs saw (the socket's owner and mode, SSH_AUTH_SOCK, a
// mount left out for an id nobody gave), that ADD of the repository and
// a --build-context cloned from it go over ssh through the default agent
// too, and that neither the key, nor the socket, nor its path reached the
// image, its config or the store.
func TestRunMountSSH(t *testing.T) {
	key := buildtest.SSHKey(t)
	port := buildtest.SSHD(t, key)
	gs := gitserver.Start(t)
	r := gs.Repo(t, "repo")
	r.Commit("one", map[string]string{"hello": "cloned-over-ssh\n"})
	r.Push()
	repo := filepath.Join(gs.Dir, "repo.git")
	gitURL := "ssh://root@127.0.0.1:" + strconv.Itoa(port) + repo
	tools := buildtest.Registry(t) + "/tools:latest"
	buildtest.Push(t, tools, buildtest.ToolsImage(t, "/usr/bin/ssh", "/usr/bin/git"))
	agentSock := buildtest.SSHAgent(t, key)
	keyData, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	// The middle line of the PEM body: private key material.
	lines := strings.Split(strings.TrimSpace(string(keyData)), "\n")
	secret := lines[len(lines)/2]

	for _, tc := range []struct{ name, source string }{
		{"key-files", key},
		{"ssh-agent", agentSock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			agents := map[string]*sshagent.Agent{}
			for _, id := range []string{"default", "git"} {
				id, a, err := sshagent.Parse(id+"="+tc.source, os.Getenv)
				if err != nil {
					t.Fatal(err)
				}
				agents[id] = a
			}
			dir := copyCase(t, "builds/ssh")
			res, log := f.mustBuild(dir, func(o *Options) {
				o.SSH = agents
				o.Network = NetworkHost
				o.BuildArgs["BASE"] = tools
				o.BuildArgs["PORT"] = strconv.Itoa(port)
				o.BuildArgs["REPO"] = repo
				o.BuildArgs["GITURL"] = gitURL
				o.NamedContexts = namedContexts(t, "gitctx="+gitURL)
			})
			u := unpack(t, res.Image)
			for p, want := range map[string]string{
				"ssh-out":        "hello-over-ssh\n",
				"git-agent-stat": "1000 1000 660\n",
				"repo/hello":     "cloned-over-ssh\n",
				"absent-ok":      "",
				"added/hello":    "cloned-over-ssh\n",
				"from-gitctx":    "cloned-over-ssh\n",
			} {
				if got := readFile(t, u.rootfs, p); got != want {
					t.Errorf("/%s = %q, want %q", p, got, want)
				}
			}
			for _, p := range []string{"run/buildkit/ssh_agent.0", "tmp/git-agent"} {
				if _, err := os.Lstat(filepath.Join(u.rootfs, p)); !os.IsNotExist(err) {
					t.Errorf("the image holds the agent's mountpoint /%s (%v)", p, err)
				}
			}
			cfg, _ := json.Marshal(u.config)
			for _, leak := range []string{secret, key, agentSock, "agent.sock"} {
				if bytes.Contains(cfg, []byte(leak)) || strings.Contains(log, leak) {
					t.Errorf("the image config or the progress output holds %q", leak)
				}
			}
			filepath.Walk(f.root, func(p string, fi os.FileInfo, err error) error {
				if err != nil || !fi.Mode().IsRegular() {
					return nil
				}
				if dt, err := os.ReadFile(p); err == nil && bytes.Contains(dt, []byte(secret)) {
					t.Errorf("store file %s holds the private key", p)
				}
				return nil
			})
			if leftover, _ := filepath.Glob(filepath.Join(f.root, "tmp", "ssh-*")); len(leftover) > 0 {
				t.Errorf("agent sockets left behind: %q", leftover)
			}
		})
	}
}

// Package sshagent gives RUN --mount=type=ssh its SSH agents. An Agent is
// either a forwarded agent (a unix socket of the host, such as
// $SSH_AUTH_SOCK) or an agent served in-process from private key files;
// Listen serves it on a new socket that a RUN mounts, for as long as the
// RUN lasts. Neither a key nor a socket path ever leaves this package for
// a layer, a cache key or the image history: the build only learns the id.
package sshagent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// DefaultID is the id of --ssh default and of a mount without id=.
const DefaultID = "default"

// MaxKeySize bounds a private key file read whole.
const MaxKeySize = 1 << 20

// Agent is one --ssh id's agent. It is safe for concurrent use.
type Agent struct {
	socket  string      // forwarded agent socket, or ""
	keyring agent.Agent // in-process agent serving key files, or nil
}

// Parse parses a --ssh value as buildx does: "default" or "ID" (the agent
// at $SSH_AUTH_SOCK), "ID=SOCKET" or "ID=KEYFILE[,KEYFILE...]". Paths
// that are unix sockets are forwarded (one at most, not mixed with keys);
// other paths are read as unencrypted private keys now, so that a bad key
// fails the build before it starts. getenv reads SSH_AUTH_SOCK.
func Parse(spec string, getenv func(string) string) (string, *Agent, error) {
	id, paths, _ := strings.Cut(spec, "=")
	if id == "" {
		return "", nil, fmt.Errorf("--ssh %q: no id", spec)
	}
	var list []string
	for _, p := range strings.Split(paths, ",") {
		if p != "" {
			list = append(list, p)
		}
	}
	if len(list) == 0 {
		sock := getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return "", nil, fmt.Errorf("--ssh %s: SSH_AUTH_SOCK is not set; give a socket or key files as %s=PATH", id, id)
		}
		list = []string{sock}
	}
	a, err := load(list)
	if err != nil {
		return "", nil, fmt.Errorf("--ssh %s: %w", id, err)
	}
	return id, a, nil
}

// load makes the agent of a list of socket or key file paths.
func load(paths []string) (*Agent, error) {
	a := &Agent{}
	var keys agent.Agent
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSocket != 0 {
			if a.socket != "" {
				return nil, errors.New("only one agent socket may be given")
			}
			a.socket = p
			continue
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is neither a unix socket nor a key file", p)
		}
		if keys == nil {
			keys = agent.NewKeyring()
		}
		if err := addKey(keys, p); err != nil {
			return nil, err
		}
	}
	if a.socket != "" && keys != nil {
		return nil, errors.New("an agent socket and key files cannot be mixed")
	}
	if keys != nil {
		a.keyring = readOnly{keys}
	}
	return a, nil
}

// addKey reads the private key file p into keys.
func addKey(keys agent.Agent, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	dt, err := io.ReadAll(io.LimitReader(f, MaxKeySize+1))
	if err != nil {
		return fmt.Errorf("read key %s: %w", p, err)
	}
	if len(dt) > MaxKeySize {
		return fmt.Errorf("key %s: larger than %d bytes", p, MaxKeySize)
	}
	k, err := ssh.ParseRawPrivateKey(dt)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return fmt.Errorf("key %s is encrypted: add it to an ssh-agent and give its socket (--ssh ID=$SSH_AUTH_SOCK)", p)
	}
	if err != nil {
		return fmt.Errorf("key %s: %w", p, err)
	}
	if err := keys.Add(agent.AddedKey{PrivateKey: k}); err != nil {
		return fmt.Errorf("key %s: %w", p, err)
	}
	return nil
}

// Listen serves the agent on a new unix socket at path, made owner
// uid:gid and mode perm, until the returned Closer is closed; Close also
// ends every connection still open. The directory of path must be
// private: the socket exists with the default mode for a moment.
func (a *Agent) Listen(path string, uid, gid int, perm os.FileMode) (io.Closer, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen for the ssh agent: %w", err)
	}
	l.SetUnlinkOnClose(true)
	err = os.Chown(path, uid, gid)
	if err == nil {
		err = os.Chmod(path, perm)
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("listen for the ssh agent: %w", err)
	}
	s := &server{a: a, l: l, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// server is one Listen.
type server struct {
	a      *Agent
	l      *net.UnixListener
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]bool
}

func (s *server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		if !s.track(c, true) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			defer c.Close()
			s.a.serve(c, s.track)
		}()
	}
}

// track adds or removes an open connection; it reports false once the
// server is closed.
func (s *server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = true
	} else {
		delete(s.conns, c)
	}
	return true
}

// Close stops listening, removes the socket, ends the open connections and
// waits for their goroutines.
func (s *server) Close() error {
	s.mu.Lock()
	s.closed = true
	err := s.l.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// serve answers one client connection: the keyring speaks the agent
// protocol itself; a forwarded socket gets the bytes both ways.
func (a *Agent) serve(c net.Conn, track func(net.Conn, bool) bool) {
	if a.keyring != nil {
		_ = agent.ServeAgent(a.keyring, c)
		return
	}
	up, err := net.Dial("unix", a.socket)
	if err != nil {
		return
	}
	if !track(up, true) {
		up.Close()
		return
	}
	defer track(up, false)
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// readOnly is an agent whose keys a RUN can use but not change, as in
// BuildKit: a build must not add keys to, or lock, the user's agent.
type readOnly struct{ agent.Agent }

var errReadOnly = errors.New("the build's ssh agent is read-only")

func (readOnly) Add(agent.AddedKey) error   { return errReadOnly }
func (readOnly) Remove(ssh.PublicKey) error { return errReadOnly }
func (readOnly) RemoveAll() error           { return errReadOnly }
func (readOnly) Lock([]byte) error          { return errReadOnly }
func (readOnly) Unlock([]byte) error        { return errReadOnly }

// GitSSHCommand is the ssh command git runs for ssh remotes, as BuildKit's
// git source runs it without known hosts: no user configuration, host keys
// neither checked nor remembered.
const GitSSHCommand = "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"

// GitEnv returns the environment a git process of the builder needs to
// reach ssh remotes through a: SSH_AUTH_SOCK (the forwarded socket itself,
// or a new socket in a private directory under tmpDir serving the keys)
// and GIT_SSH_COMMAND. Close the returned Closer when git is done.
func (a *Agent) GitEnv(tmpDir string) ([]string, io.Closer, error) {
	env := []string{"GIT_SSH_COMMAND=" + GitSSHCommand}
	if a.socket != "" {
		return append(env, "SSH_AUTH_SOCK="+a.socket), closeAll{}, nil
	}
	dir, err := os.MkdirTemp(tmpDir, "ssh-")
	if err != nil {
		return nil, nil, err
	}
	sock := filepath.Join(dir, "agent.sock")
	srv, err := a.Listen(sock, os.Getuid(), os.Getgid(), 0o600)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return append(env, "SSH_AUTH_SOCK="+sock), closeAll{srv, removeDir(dir)}, nil
}

// closeAll closes each in order and returns the first error.
type closeAll []io.Closer

func (c closeAll) Close() error {
	var first error
	for _, x := range c {
		if err := x.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// removeDir removes a directory tree when closed.
type removeDir string

func (d removeDir) Close() error { return os.RemoveAll(string(d)) }

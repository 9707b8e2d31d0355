package sshagent

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// writeKey writes a new ed25519 private key (encrypted with passphrase
// when it is not empty) into dir and returns its path and public key.
func writeKey(t *testing.T, dir, name, passphrase string) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var blk *pem.Block
	if passphrase != "" {
		blk, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	} else {
		blk, err = ssh.MarshalPrivateKey(priv, "")
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p, sp
}

// listKeys connects to the agent at sock and lists its keys.
func listKeys(t *testing.T, sock string) []*agent.Key {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys, err := agent.NewClient(c).List()
	if err != nil {
		t.Fatalf("list keys at %s: %v", sock, err)
	}
	return keys
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	k1, _ := writeKey(t, dir, "k1", "")
	k2, _ := writeKey(t, dir, "k2", "")
	enc, _ := writeKey(t, dir, "enc", "secret")
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sock2 := filepath.Join(dir, "agent2.sock")
	l2, err := net.Listen("unix", sock2)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	env := map[string]string{"SSH_AUTH_SOCK": sock}
	for _, tc := range []struct {
		spec, env string // env: SSH_AUTH_SOCK, "-" for unset
		id        string
		socket    string
		keys      int
		err       string
	}{
		{spec: "default", id: "default", socket: sock},
		{spec: "gh", id: "gh", socket: sock},
		{spec: "gh=", id: "gh", socket: sock},
		{spec: "default", env: "-", err: `^--ssh default: SSH_AUTH_SOCK is not set`},
		{spec: "gh=" + sock2, id: "gh", socket: sock2},
		{spec: "gh=" + k1, id: "gh", keys: 1},
		{spec: "gh=" + k1 + "," + k2, id: "gh", keys: 2},
		{spec: "=" + k1, err: `no id`},
		{spec: "gh=" + sock + "," + sock2, err: `only one agent socket`},
		{spec: "gh=" + sock + "," + k1, err: `cannot be mixed`},
		{spec: "gh=" + enc, err: `key .*enc is encrypted: add it to an ssh-agent`},
		{spec: "gh=" + garbage, err: `key .*garbage: `},
		{spec: "gh=" + filepath.Join(dir, "missing"), err: `no such file`},
		{spec: "gh=" + dir, err: `neither a unix socket nor a key file`},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			getenv := func(k string) string {
				if tc.env == "-" {
					return ""
				}
				return env[k]
			}
			id, a, err := Parse(tc.spec, getenv)
			if tc.err != "" {
				if err == nil || !regexp.MustCompile(tc.err).MatchString(err.Error()) {
					t.Fatalf("error %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id != tc.id || a.socket != tc.socket {
				t.Fatalf("got id %q socket %q, want %q %q", id, a.socket, tc.id, tc.socket)
			}
			if tc.keys > 0 {
				keys, err := a.keyring.List()
				if err != nil || len(keys) != tc.keys {
					t.Fatalf("keyring has %d keys (%v), want %d", len(keys), err, tc.keys)
				}
			}
		})
	}
}

// TestListen serves a key agent on a socket owned and moded as asked,
// checks that a client can list and use its key but not change the
// agent, then forwards a second socket to the first and checks that the
// forwarded agent answers the same; Close removes the sockets and ends
// open connections.
func TestListen(t *testing.T) {
	dir := t.TempDir()
	k, pub := writeKey(t, dir, "k", "")
	_, a, err := Parse("default="+k, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "a.sock")
	srv, err := a.Listen(sock, os.Getuid(), os.Getgid(), 0o640)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("socket %v, %v; want a socket of mode 0640", fi, err)
	}
	keys := listKeys(t, sock)
	if len(keys) != 1 || string(keys[0].Marshal()) != string(pub.Marshal()) {
		t.Fatalf("agent lists %v, want the key", keys)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ac := agent.NewClient(c)
	sig, err := ac.Sign(pub, []byte("data"))
	if err != nil || pub.Verify([]byte("data"), sig) != nil {
		t.Fatalf("sign through the agent: %v", err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := ac.Add(agent.AddedKey{PrivateKey: priv}); err == nil {
		t.Fatal("a client added a key to the build's agent")
	}
	if err := ac.RemoveAll(); err == nil {
		t.Fatal("a client removed the build's agent's keys")
	}

	// Forward a second socket to the first.
	_, fwd, err := Parse("fwd="+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock2 := filepath.Join(dir, "fwd.sock")
	srv2, err := fwd.Listen(sock2, os.Getuid(), os.Getgid(), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if keys := listKeys(t, sock2); len(keys) != 1 || string(keys[0].Marshal()) != string(pub.Marshal()) {
		t.Fatalf("forwarded agent lists %v, want the key", keys)
	}
	open, err := net.Dial("unix", sock2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.NewClient(open).List(); err != nil {
		t.Fatal(err)
	}
	if err := srv2.Close(); err != nil {
		t.Fatal(err)
	}
	// Close ended the open connection: a read sees EOF, not a hang.
	buf := make([]byte, 1)
	if n, err := open.Read(buf); err == nil {
		t.Fatalf("read %d bytes from a connection of a closed agent", n)
	}
	open.Close()
	c.Close()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{sock, sock2} {
		if _, err := os.Lstat(s); !os.IsNotExist(err) {
			t.Errorf("socket %s left after Close: %v", s, err)
		}
	}
}

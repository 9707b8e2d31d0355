package buildtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// SSHKey makes a throwaway ed25519 key pair with ssh-keygen in a new
// temporary directory and returns the private key's path (the public key
// is that path + ".pub").
func SSHKey(t testing.TB) string {
	t.Helper()
	keygen := RequireTool(t, "ssh-keygen")
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "builder-test", "-f", p).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return p
}

// SSHD starts OpenSSH's sshd on 127.0.0.1 with a configuration file,
// host key and authorized_keys of its own, accepting only the public key
// of the private key file userKey, for root, and returns its port. It is
// stopped when the test ends. Needs root (sshd changes to the user).
func SSHD(t testing.TB, userKey string) int {
	t.Helper()
	RequireRoot(t)
	sshd := RequireTool(t, "/usr/sbin/sshd")
	dir := t.TempDir()
	hostKey := SSHKey(t)
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd refuses to start without its privilege separation directory,
	// which the package creates only when the service runs.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
PidFile none
LogLevel ERROR
`, port, hostKey, auth)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	done, log := startDaemon(t, exec.Command(sshd, "-D", "-e", "-f", cfg))
	waitListening(t, "127.0.0.1:"+strconv.Itoa(port), done, log)
	return port
}

// startDaemon starts cmd, which runs in the foreground until killed, and
// kills it (by its own PID) when the test ends. done closes when it exits;
// log collects its output.
func startDaemon(t testing.TB, cmd *exec.Cmd) (done <-chan struct{}, log *bytes.Buffer) {
	t.Helper()
	log = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	return exited, log
}

// waitListening waits up to 10 seconds for a TCP listener at addr; done
// closes when the server exits early.
func waitListening(t testing.TB, addr string, done <-chan struct{}, log *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("server for %s exited: %s", addr, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server for %s not listening after 10s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SSHAgent starts OpenSSH's ssh-agent on a socket in a new temporary
// directory, adds the private key files keys and returns the socket. It
// is stopped when the test ends.
func SSHAgent(t testing.TB, keys ...string) string {
	t.Helper()
	bin := RequireTool(t, "ssh-agent")
	add := RequireTool(t, "ssh-add")
	sock := filepath.Join(t.TempDir(), "agent.sock")
	done, log := startDaemon(t, exec.Command(bin, "-D", "-a", sock))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("ssh-agent exited: %s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("ssh-agent not listening after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, k := range keys {
		cmd := exec.Command(add, k)
		cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add: %v\n%s", err, out)
		}
	}
	return sock
}

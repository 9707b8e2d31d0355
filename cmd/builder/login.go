package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"builder/build/registry"

	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHubKey is the key Docker keeps Docker Hub credentials under.
const dockerHubKey = "https://index.docker.io/v1/"

// dockerConfigPath is $DOCKER_CONFIG/config.json, else
// ~/.docker/config.json: the file go-containerregistry's default keychain
// (and docker, podman, skopeo) read.
func dockerConfigPath() (string, error) {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the docker config: %w", err)
	}
	return filepath.Join(home, ".docker", "config.json"), nil
}

// registryKey is the config.json key of a registry: Docker Hub's URL for
// Docker Hub, else host[:port].
func registryKey(reg name.Registry) string {
	if reg.RegistryStr() == name.DefaultRegistry {
		return dockerHubKey
	}
	return reg.RegistryStr()
}

// dockerConfig is config.json, every field kept as it was read.
type dockerConfig struct {
	path   string
	fields map[string]json.RawMessage
}

func readDockerConfig() (*dockerConfig, error) {
	p, err := dockerConfigPath()
	if err != nil {
		return nil, err
	}
	c := &dockerConfig{path: p, fields: map[string]json.RawMessage{}}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &c.fields); err != nil {
			return nil, fmt.Errorf("parse %s: %w", p, err)
		}
	}
	return c, nil
}

// helper returns the credential helper that stores key's credentials:
// credHelpers[key], else credsStore, else "".
func (c *dockerConfig) helper(key string) string {
	var helpers map[string]string
	_ = json.Unmarshal(c.fields["credHelpers"], &helpers)
	if h := helpers[key]; h != "" {
		return h
	}
	var store string
	_ = json.Unmarshal(c.fields["credsStore"], &store)
	return store
}

// auths returns the auths object.
func (c *dockerConfig) auths() map[string]json.RawMessage {
	a := map[string]json.RawMessage{}
	_ = json.Unmarshal(c.fields["auths"], &a)
	return a
}

// save writes the config back, mode 0600, through a temporary file.
func (c *dockerConfig) save(auths map[string]json.RawMessage) error {
	b, err := json.Marshal(auths)
	if err != nil {
		return err
	}
	c.fields["auths"] = b
	out, err := json.MarshalIndent(c.fields, "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return err
	}
	if err := writeFileAtomic(c.path, append(out, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", c.path, err)
	}
	return nil
}

// runHelper runs docker-credential-HELPER ACTION with input on stdin.
func runHelper(ctx context.Context, helper, action string, input []byte) error {
	cmd := exec.CommandContext(ctx, "docker-credential-"+helper, action)
	cmd.Stdin = bytes.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("credential helper %s %s: %w: %s", helper, action, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// loginError is a refused or failed login: one line naming the registry.
// Unwrap gives the cause (a registry's refusal is a *transport.Error).
type loginError struct {
	registry string
	err      error
}

func (e *loginError) Error() string { return "login " + e.registry + ": " + registry.Describe(e.err) }

// Unwrap returns the cause.
func (e *loginError) Unwrap() error { return e.err }

// readPassword reads a line from stdin, without echo if it is a terminal.
func readPassword(prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return readLine(os.Stdin)
	}
	fmt.Fprint(os.Stderr, prompt)
	noecho := *old
	noecho.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noecho); err != nil {
		return "", err
	}
	defer func() {
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, old)
		fmt.Fprintln(os.Stderr)
	}()
	return readLine(os.Stdin)
}

func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", fmt.Errorf("read stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func runLogin(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("login", g)
	var user, pass string
	var passStdin bool
	var insecure []string
	fs.StringVarP(&user, "username", "u", "", "user name")
	fs.StringVarP(&pass, "password", "p", "", "password (visible to other users of this machine; prefer --password-stdin)")
	fs.BoolVar(&passStdin, "password-stdin", false, "read the password from stdin")
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	if help, err := parseCommand(fs, "builder login [OPTIONS] [REGISTRY]\n\nChecks the credentials against the registry and stores them in $DOCKER_CONFIG/config.json (default ~/.docker).", args); help || err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("builder login takes at most one REGISTRY")
	}
	if passStdin && pass != "" {
		return usagef("--password and --password-stdin are mutually exclusive")
	}
	if passStdin && user == "" {
		return usagef("--password-stdin needs --username")
	}
	rc, err := g.registryClient(insecure)
	if err != nil {
		return err
	}
	reg, err := rc.ParseRegistry(fs.Arg(0))
	if err != nil {
		return usagef("registry %q: %w", fs.Arg(0), err)
	}
	if user == "" {
		fmt.Fprint(os.Stderr, "Username: ")
		if user, err = readLine(os.Stdin); err != nil {
			return err
		}
	}
	switch {
	case passStdin:
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	case pass == "":
		if pass, err = readPassword("Password: "); err != nil {
			return err
		}
	}
	if user == "" || pass == "" {
		return usagef("login needs a user name and a password")
	}
	if err := rc.CheckLogin(ctx, reg, user, pass); err != nil {
		return &loginError{registry: reg.RegistryStr(), err: err}
	}
	cfg, err := readDockerConfig()
	if err != nil {
		return err
	}
	key := registryKey(reg)
	auths := cfg.auths()
	if h := cfg.helper(key); h != "" {
		in, _ := json.Marshal(map[string]string{"ServerURL": key, "Username": user, "Secret": pass})
		if err := runHelper(ctx, h, "store", in); err != nil {
			return err
		}
		delete(auths, key)
	} else {
		entry, _ := json.Marshal(map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))})
		auths[key] = entry
	}
	if err := cfg.save(auths); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "Login Succeeded")
	return nil
}

func runLogout(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("logout", g)
	if help, err := parseCommand(fs, "builder logout [REGISTRY]", args); help || err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("builder logout takes at most one REGISTRY")
	}
	// Logout only edits config.json: no configuration, no network.
	reg, err := registry.New(registry.Options{}).ParseRegistry(fs.Arg(0))
	if err != nil {
		return usagef("registry %q: %w", fs.Arg(0), err)
	}
	cfg, err := readDockerConfig()
	if err != nil {
		return err
	}
	key := registryKey(reg)
	auths := cfg.auths()
	_, had := auths[key]
	if h := cfg.helper(key); h != "" {
		if err := runHelper(ctx, h, "erase", []byte(key)); err != nil {
			return err
		}
		had = true
	}
	if !had {
		fmt.Fprintf(os.Stderr, "Not logged in to %s\n", key)
		return nil
	}
	delete(auths, key)
	if err := cfg.save(auths); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Removing login credentials for %s\n", key)
	return nil
}

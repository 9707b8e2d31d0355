package build

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"builder/build/cachemount"
	"builder/build/copier"
	"builder/build/sandbox"
	"builder/build/secrets"
	"builder/build/sshagent"
	"builder/build/store"
	"builder/parser"
	"builder/snapshot"
)

// runMount is one RUN --mount with its variables expanded and its source
// resolved.
type runMount struct {
	m      *parser.RunMount
	target string // absolute path in the container
	// source is the bind or cache sub-path, cleaned and relative ("" for
	// the whole tree).
	source string
	// layers is the stage or image a bind reads from; hasFrom marks a
	// bind with from= (an empty stage has no layers).
	layers  []layerRef
	hasFrom bool
	// dir is the directory a bind reads when it is not a stage or image:
	// the build context, or a directory-like named context.
	dir *copier.Context
	// input identifies what a bind reads, for the cache key: the chain ID
	// of the stage or image, or the checksum of the context path.
	input    string
	secretID string
	cacheID  string
	// sshID is the agent an ssh mount forwards; sshEnv marks the mount
	// SSH_AUTH_SOCK points at.
	sshID  string
	sshEnv bool
}

// runMounts parses and resolves the --mount flags of a RUN. Bind sources
// in other stages are waited for.
func (j *job) runMounts(ctx context.Context, st *stageState, op *parser.Run) ([]*runMount, error) {
	ex := st.expander()
	wd := st.cfg.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	var out []*runMount
	nSSH := 0
	sshEnv := false
	if _, ok := envVars(st.cfg.Config.Env).Get("SSH_AUTH_SOCK"); ok {
		sshEnv = true // the image's own value wins, as in BuildKit
	}
	for _, raw := range op.Mounts {
		m, err := parser.ParseMount(raw.Spec, ex.word)
		if err != nil {
			return nil, fmt.Errorf("parse --mount=%s: %w", raw.Spec, err)
		}
		rm := &runMount{m: m}
		if m.Target != "" {
			rm.target = m.Target
			if !path.IsAbs(rm.target) {
				rm.target = path.Join(wd, rm.target)
			}
			rm.target = path.Clean(rm.target)
		}
		rm.source = strings.TrimPrefix(path.Clean("/"+m.Source), "/")
		switch m.Type {
		case "ssh":
			if m.Source != "" {
				return nil, fmt.Errorf("RUN --mount=type=ssh: ssh does not support source")
			}
			rm.sshID = sshMountID(m)
			if rm.target == "" {
				rm.target = "/run/buildkit/ssh_agent." + strconv.Itoa(nSSH)
			}
			nSSH++
			if _, ok := j.o.SSH[rm.sshID]; ok && !sshEnv {
				rm.sshEnv, sshEnv = true, true
			} else if !ok && m.Required {
				return nil, missingSSH(rm.sshID)
			}
		case "bind":
			if err := j.resolveBind(ctx, st, rm); err != nil {
				return nil, err
			}
		case "cache":
			rm.cacheID = m.ID
			if rm.cacheID == "" {
				rm.cacheID = path.Clean(m.Target)
			}
			if m.From != "" {
				// A cache seeded from a stage or image is its own cache,
				// as in BuildKit: another seed starts another one.
				layers, err := j.resolveFrom(ctx, st, m.From)
				if err != nil {
					return nil, err
				}
				rm.hasFrom, rm.layers = true, layers
				rm.cacheID += "\x00from:" + chainOf(layers)
			}
			j.noteCacheMount(rm)
			if m.Sharing != "" && m.Sharing != "shared" && m.Sharing != "private" && m.Sharing != "locked" {
				return nil, fmt.Errorf("RUN --mount: invalid cache sharing %q", m.Sharing)
			}
		case "tmpfs":
		case "secret":
			id := secretMountID(m)
			if id == "" {
				return nil, fmt.Errorf("RUN --mount=type=secret: one of id, source or target is required")
			}
			rm.secretID = id
			j.rec.noteSecret(id, m.Required)
			if m.Env == "" && rm.target == "" {
				rm.target = "/run/secrets/" + path.Base(id)
			}
		default:
			return nil, fmt.Errorf("RUN --mount: unsupported mount type %q", m.Type)
		}
		if m.Type != "secret" || rm.target != "" {
			if rm.target == "" || rm.target == "/" {
				return nil, fmt.Errorf("RUN --mount=%s: invalid mount target %q", raw.Spec, m.Target)
			}
		}
		out = append(out, rm)
	}
	return out, nil
}

// resolveBind finds the tree a bind mount reads from and what identifies
// its content.
func (j *job) resolveBind(ctx context.Context, st *stageState, rm *runMount) error {
	from := rm.m.From
	rm.dir = j.bctx
	bc, named, err := j.namedDirFor(ctx, st, from)
	if err != nil {
		return err
	}
	if named {
		rm.dir = bc
	}
	if from == "" || named {
		src := rm.dir.Source()
		sum, err := copier.Checksum(ctx, src, copier.Request{Sources: []string{"/" + rm.source}, Dest: "/"})
		if err != nil {
			return fmt.Errorf("mount context path /%s: %w", rm.source, err)
		}
		rm.input = "context:" + sum
		return nil
	}
	layers, err := j.resolveFrom(ctx, st, from)
	if err != nil {
		return err
	}
	rm.hasFrom, rm.layers = true, layers
	rm.input = "layers:" + chainOf(rm.layers)
	return nil
}

// cacheMount describes a cache mount to the cache mount directories.
func (rm *runMount) cacheMount() cachemount.Mount {
	return cachemount.Mount{ID: rm.cacheID, Sharing: rm.m.Sharing, Source: rm.source, Mode: rm.m.Mode, UID: rm.m.UID, GID: rm.m.GID}
}

// chainOf returns the chain ID of layers, or "" for none.
func chainOf(layers []layerRef) string {
	if len(layers) == 0 {
		return ""
	}
	st := stageState{layers: layers}
	ids := snapshot.ChainIDs(st.diffIDs())
	return ids[len(ids)-1]
}

// mountsKey describes the mounts for the cache key of a RUN: their specs
// and the identity of what binds read. Secret values never enter it, only
// secret ids.
func mountsKey(ms []*runMount) string {
	type keyMount struct {
		Type, Target, Source, Input, ID, Sharing, Env string
		ReadOnly, Required                            bool
		Mode, UID, GID                                *uint64
		Size                                          int64
	}
	var out []keyMount
	for _, rm := range ms {
		m := rm.m
		k := keyMount{Type: m.Type, Target: rm.target, Source: rm.source, Input: rm.input, ReadOnly: m.ReadOnly,
			Mode: m.Mode, UID: m.UID, GID: m.GID, Size: m.Size}
		switch m.Type {
		case "cache":
			k.ID, k.Sharing = rm.cacheID, m.Sharing
		case "secret":
			k.ID, k.Env, k.Required = rm.secretID, m.Env, m.Required
		case "ssh":
			k.ID, k.Required = rm.sshID, m.Required
		}
		out = append(out, k)
	}
	dt, _ := json.Marshal(out)
	return string(dt)
}

// withRunMounts prepares what the mounts of a RUN need (cache directories,
// locked as their sharing asks; secret values; mounted stages and images;
// throwaway copies for writable binds) and calls fn with the sandbox mounts
// and the secret environment variables. fn runs on a thread whose mount
// namespace holds the mounted sources: it must start the sandbox from its
// own goroutine (sandbox.Run does). Everything is released when it
// returns, also on error or cancellation.
func (j *job) withRunMounts(ctx context.Context, ms []*runMount, script *inlineScript, fn func(extra []sandbox.Mount, env []string) error) error {
	var extra []sandbox.Mount
	var env []string
	type secretFile struct {
		rm   *runMount
		data []byte
	}
	var secretFiles []secretFile
	type pending struct { // binds resolved once the sets are mounted
		rm  *runMount
		set int // index in sets, -1 for a host directory
		dir string
	}
	var binds []pending
	sets := [][]snapshot.Mount{}
	needScratch := script != nil
	for _, rm := range ms {
		m := rm.m
		switch m.Type {
		case "cache":
			if err := j.restoreCacheMount(ctx, rm); err != nil {
				return err
			}
			var seed func(string) error
			if rm.hasFrom {
				seed = func(dir string) error { return j.seedCacheMount(ctx, rm, dir) }
			}
			dir, release, err := j.b.cacheMounts.Acquire(ctx, rm.cacheMount(), seed)
			if err != nil {
				return err
			}
			defer release()
			extra = append(extra, sandbox.Mount{Type: "bind", Root: dir, Source: rm.source, Target: rm.target, ReadOnly: m.ReadOnly})
		case "tmpfs":
			opts := []string{"nosuid"}
			if m.Size > 0 {
				opts = append(opts, "size="+strconv.FormatInt(m.Size, 10))
			}
			extra = append(extra, sandbox.Mount{Type: "tmpfs", Target: rm.target, Options: opts})
		case "secret":
			s, ok := j.o.Secrets[rm.secretID]
			var val []byte
			if ok {
				var err error
				if val, ok, err = s.Value(); err != nil {
					return fmt.Errorf("read secret %s: %w", rm.secretID, err)
				}
			}
			if !ok {
				if m.Required {
					return missingSecret(rm.secretID)
				}
				continue
			}
			if m.Env != "" {
				env = append(env, m.Env+"="+string(val))
			}
			if rm.target != "" {
				secretFiles = append(secretFiles, secretFile{rm, val})
				needScratch = true
			}
		case "ssh":
			a, ok := j.o.SSH[rm.sshID]
			if !ok {
				continue // not required: BuildKit skips the mount
			}
			srv, sock, err := j.listenSSH(a, rm)
			if err != nil {
				return err
			}
			defer os.RemoveAll(filepath.Dir(sock))
			defer srv.Close()
			extra = append(extra, sandbox.Mount{Type: "bind", Root: filepath.Dir(sock), Source: filepath.Base(sock), Target: rm.target})
			if rm.sshEnv {
				env = append(env, "SSH_AUTH_SOCK="+rm.target)
			}
		case "bind":
			switch {
			case rm.hasFrom:
				chain, err := j.ensureChain(ctx, rm.layers)
				if err != nil {
					return err
				}
				if chain == "" {
					dir, err := j.tempDir("empty-")
					if err != nil {
						return err
					}
					defer os.RemoveAll(dir)
					binds = append(binds, pending{rm: rm, set: -1, dir: dir})
				} else {
					view, err := j.b.snapshotter.View(ctx, chain)
					if err != nil {
						return fmt.Errorf("view snapshot: %w", err)
					}
					sets = append(sets, view)
					binds = append(binds, pending{rm: rm, set: len(sets) - 1})
				}
			case rm.dir.Ignore != nil:
				// Bind a copy without the .dockerignore'd files, which a
				// RUN must not see.
				dir, err := j.tempDir("context-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				if err := copier.Copy(ctx, rm.dir.Source(), dir, copier.Request{Sources: []string{"/" + rm.source}, Dest: "/" + ctxCopyName + "/"}); err != nil {
					return fmt.Errorf("mount context path /%s: %w", rm.source, err)
				}
				root := filepath.Join(dir, ctxCopyName)
				if isFileInRoot(rm.dir.Dir, rm.source) {
					rm.source = path.Base(rm.source)
				} else {
					rm.source = ""
				}
				binds = append(binds, pending{rm: rm, set: -1, dir: root})
			default:
				binds = append(binds, pending{rm: rm, set: -1, dir: rm.dir.Dir})
			}
			if !m.ReadOnly {
				needScratch = true
			}
		}
	}
	scratchSet := -1
	if needScratch {
		sets = append(sets, []snapshot.Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"mode=700"}}})
		scratchSet = len(sets) - 1
	}
	setup := func(roots []string) error {
		scratch := ""
		if scratchSet >= 0 {
			scratch = roots[scratchSet]
		}
		if script != nil {
			dir := filepath.Join(scratch, "pipes")
			if err := os.Mkdir(dir, 0o755); err != nil {
				return fmt.Errorf("write heredoc script: %w", err)
			}
			if err := os.WriteFile(filepath.Join(dir, script.Name), []byte(script.Data), 0o755); err != nil {
				return fmt.Errorf("write heredoc script: %w", err)
			}
			extra = append(extra, sandbox.Mount{Type: "bind", Root: scratch, Source: "pipes", Target: pipesDir, ReadOnly: true})
		}
		for i, s := range secretFiles {
			name := "secret-" + strconv.Itoa(i)
			if err := secrets.WriteFile(filepath.Join(scratch, name), s.data, s.rm.m.Mode, s.rm.m.UID, s.rm.m.GID); err != nil {
				return fmt.Errorf("mount secret %s: %w", s.rm.secretID, err)
			}
			extra = append(extra, sandbox.Mount{Type: "bind", Root: scratch, Source: name, Target: s.rm.target, ReadOnly: true})
		}
		for i, b := range binds {
			root := b.dir
			if b.set >= 0 {
				root = roots[b.set]
			}
			// The source is checked here for a clear error; the sandbox
			// resolves it again inside root by fd, as the writable copy
			// does.
			src, err := pathrs.OpenInRoot(root, "/"+b.rm.source)
			if err != nil {
				return fmt.Errorf("mount source /%s: %w", b.rm.source, err)
			}
			m := sandbox.Mount{Type: "bind", Root: root, Source: b.rm.source, Target: b.rm.target, ReadOnly: b.rm.m.ReadOnly}
			if !b.rm.m.ReadOnly {
				// Writes are allowed but thrown away with the scratch tmpfs.
				name := "rw-" + strconv.Itoa(i)
				sub, err := writableCopy(filepath.Join(scratch, name), src)
				if err != nil {
					src.Close()
					return fmt.Errorf("mount source /%s read-write: %w", b.rm.source, err)
				}
				m.Root, m.Source = scratch, path.Join(name, sub)
			}
			src.Close()
			extra = append(extra, m)
		}
		return fn(extra, env)
	}
	if len(sets) == 0 {
		return setup(nil)
	}
	return snapshot.WithMounts(ctx, sets, setup)
}

// missingSSH is the error of a required ssh mount whose id no --ssh gave.
func missingSSH(id string) error {
	flag := "--ssh " + id
	if id == sshagent.DefaultID {
		flag = "--ssh default"
	}
	return fmt.Errorf("RUN --mount=type=ssh,id=%s is required but no agent was given for it: add %s (the agent at $SSH_AUTH_SOCK) or %s=KEYFILE", id, flag, id)
}

// listenSSH serves agent a for the ssh mount rm on a new socket in a
// private directory of its own, owned and moded as the mount asks
// (default root, 0600). The caller closes the server, then removes the
// directory.
func (j *job) listenSSH(a *sshagent.Agent, rm *runMount) (io.Closer, string, error) {
	dir, err := j.tempDir("ssh-")
	if err != nil {
		return nil, "", err
	}
	uid, gid, mode := 0, 0, os.FileMode(0o600)
	if rm.m.UID != nil {
		uid = int(*rm.m.UID)
	}
	if rm.m.GID != nil {
		gid = int(*rm.m.GID)
	}
	if rm.m.Mode != nil {
		mode = os.FileMode(*rm.m.Mode) & os.ModePerm
	}
	sock := filepath.Join(dir, "agent.sock")
	srv, err := a.Listen(sock, uid, gid, mode)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", fmt.Errorf("mount ssh agent %s: %w", rm.sshID, err)
	}
	return srv, sock, nil
}

// ctxCopyName is the directory a filtered copy of the context goes into.
const ctxCopyName = "ctx"

// tempDir makes a private directory under the store's tmp/.
func (j *job) tempDir(prefix string) (string, error) {
	base := filepath.Join(j.b.root, store.TempDir)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", fmt.Errorf("create temp dir: %w", err)
	}
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		return "", fmt.Errorf("create temp dir: %w", err)
	}
	return dir, nil
}

// seedCacheMount copies the tree of a cache mount's from= stage or image
// into dir, the cache's new directory, keeping owners and modes. It runs
// before the directory is renamed into place, so no build sees a cache
// half seeded.
func (j *job) seedCacheMount(ctx context.Context, rm *runMount, dir string) error {
	chain, err := j.ensureChain(ctx, rm.layers)
	if err != nil || chain == "" {
		return err // an empty stage seeds nothing
	}
	view, err := j.b.snapshotter.View(ctx, chain)
	if err != nil {
		return fmt.Errorf("view snapshot: %w", err)
	}
	return snapshot.WithMounts(ctx, [][]snapshot.Mount{view}, func(roots []string) error {
		return copier.Copy(ctx, copier.Source{Root: roots[0]}, dir, copier.Request{Sources: []string{"/"}, Dest: "/"})
	})
}

// writableCopy makes a writable view of the file or directory open
// (O_PATH) as src under dir (on the scratch tmpfs) and returns its path
// relative to dir: an overlay whose lower dir is src itself, named by fd,
// for a directory ("merged"), a copy for a regular file ("file"). It must
// run on the thread of the mount namespace the result is used in.
func writableCopy(dir string, src *os.File) (string, error) {
	fi, err := src.Stat()
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	switch {
	case fi.Mode().IsRegular():
		return "file", copyFile(filepath.Join(dir, "file"), src, fi)
	case !fi.IsDir():
		return "", fmt.Errorf("not a regular file or directory")
	}
	if strings.ContainsAny(dir, ",:") {
		return "", fmt.Errorf("path %q holds a comma or colon, which overlayfs options cannot carry", dir)
	}
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", err
		}
	}
	// The kernel follows the /proc/self/fd link to the directory src is
	// open on, wherever its path leads now.
	lower := "/proc/self/fd/" + strconv.Itoa(int(src.Fd()))
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("mount overlay: %w", err)
	}
	return "merged", nil
}

// copyFile copies the regular file open (O_PATH) as src to dst with its
// mode, owner and times, reading it through that fd.
func copyFile(dst string, src *os.File, fi os.FileInfo) error {
	in, err := pathrs.Reopen(src, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*unix.Stat_t); ok {
		_ = os.Lchown(dst, int(st.Uid), int(st.Gid))
	}
	if err := os.Chmod(dst, fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}

// isFileInRoot reports whether p, resolved inside root, is something
// other than a directory.
func isFileInRoot(root, p string) bool {
	f, err := pathrs.OpenInRoot(root, "/"+p)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	return err == nil && !fi.IsDir()
}

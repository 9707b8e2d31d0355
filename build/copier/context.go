package copier

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/sys/unix"
)

// maxIgnoreFile caps the size of a .dockerignore file.
const maxIgnoreFile = 4 << 20

// Context is a build context directory with its ignore rules.
type Context struct {
	// Dir is the absolute context directory.
	Dir string
	// Ignore holds the .dockerignore patterns; nil when there are none.
	Ignore *patternmatcher.PatternMatcher
	// IgnoreFile is the host path the patterns came from, "" for none.
	IgnoreFile string
	// Hashes is the context's StatCache, nil for none; the caller sets
	// it (OpenStatCache) and saves it after the build.
	Hashes *StatCache
}

// Source returns the context as a COPY source.
func (c *Context) Source() Source {
	return Source{Root: c.Dir, Ignore: c.Ignore, IsContext: true, Hashes: c.Hashes}
}

// LoadContext opens the build context dir and reads its ignore patterns.
// A "<Dockerfile>.dockerignore" file next to dockerfilePath (a host path,
// "" when the Dockerfile is not a file) wins over "<dir>/.dockerignore",
// as in BuildKit. Patterns follow github.com/moby/patternmatcher; the
// Dockerfile and the ignore file may be ignored themselves, which only
// hides them from COPY. The context's .dockerignore is opened inside dir,
// so a symlink cannot make it read a file outside; both files must be
// regular and at most 4 MiB. LoadContext only reads.
func LoadContext(dir, dockerfilePath string) (*Context, error) {
	abs, err := absClean(dir)
	if err != nil {
		return nil, err
	}
	r, err := openRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("open build context: %w", err)
	}
	defer r.close()
	c := &Context{Dir: abs}
	var data []byte
	if dockerfilePath != "" {
		p := dockerfilePath + ".dockerignore"
		f, err := openInDir(p)
		switch {
		case err == nil:
			data, err = readSmall(f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", p, err)
			}
			c.IgnoreFile = p
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("open %s: %w", p, err)
		}
	}
	if c.IgnoreFile == "" {
		rel, err := r.resolve(".dockerignore")
		if err != nil {
			return nil, fmt.Errorf("resolve .dockerignore: %w", err)
		}
		f, err := openBeneath(r.fd(), rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
		switch {
		case err == nil:
			data, err = readSmall(f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("read .dockerignore: %w", err)
			}
			c.IgnoreFile = abs + "/.dockerignore"
		case !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR):
			return nil, fmt.Errorf("open .dockerignore: %w", err)
		}
	}
	patterns, err := ignorefile.ReadAll(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", c.IgnoreFile, err)
	}
	if len(patterns) == 0 {
		return c, nil
	}
	if c.Ignore, err = patternmatcher.New(patterns); err != nil {
		return nil, fmt.Errorf("parse %s: %w", c.IgnoreFile, err)
	}
	return c, nil
}

// ReadDockerfile reads the Dockerfile at the host path p the way BuildKit
// reads it from the Dockerfile's own directory: a symlink is followed only
// inside that directory, as if it were "/", so a context's
// "Dockerfile -> /etc/shadow" or "-> /dev/zero" is not found instead of
// read. It must be a regular file. An error matches fs.ErrNotExist when
// there is no such file.
func ReadDockerfile(p string) ([]byte, error) {
	f, err := openInDir(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := fstat(f)
	if err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("read %s: not a regular file", p)
	}
	return io.ReadAll(f)
}

// openInDir opens the host file p for reading inside its directory: its
// name is resolved with the directory as the root and opened beneath it
// without following a symlink, and without blocking on a FIFO. A name
// that resolves elsewhere is named in the error.
func openInDir(p string) (*os.File, error) {
	abs, err := absClean(p)
	if err != nil {
		return nil, err
	}
	r, err := openRoot(path.Dir(abs))
	if err != nil {
		return nil, err
	}
	defer r.close()
	name := path.Base(abs)
	rel, err := r.resolve(name)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", p, err)
	}
	f, err := openBeneath(r.fd(), rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err == nil {
		return f, nil
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return nil, err
	}
	pe := &os.PathError{Op: "open", Path: p, Err: errno}
	if rel != name {
		return nil, fmt.Errorf("%w (it resolves to %q inside %s)", pe, "/"+rel, path.Dir(abs))
	}
	return nil, pe
}

// readSmall reads a regular file of at most maxIgnoreFile bytes.
func readSmall(f *os.File) ([]byte, error) {
	st, err := fstat(f)
	if err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIgnoreFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxIgnoreFile {
		return nil, fmt.Errorf("larger than %d bytes", maxIgnoreFile)
	}
	return data, nil
}

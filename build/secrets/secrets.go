// Package secrets reads the build secrets given with --secret and writes
// them where a RUN --mount=type=secret sees them. A secret's value is read
// only when a RUN mounts it and is never stored: this package keeps no
// state, it parses a --secret value into a Source, reads a Source's value
// and writes that value into a file on the RUN's private scratch tmpfs.
package secrets

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MaxSize is the largest secret value accepted, in bytes, as in BuildKit.
const MaxSize = 500 << 10

// Source says where the value of a build secret comes from: a file (File)
// or an environment variable of the builder (Env).
type Source struct {
	File string
	Env  string
}

// Parse parses a --secret value the way buildx does and returns the
// secret's id and source: "id=ID,src=PATH" (or source=), "id=ID,env=VAR",
// "type=file|env" to say how a bare src= is meant. With neither src nor
// env the value comes from the environment variable named ID. A relative
// src is made absolute against the current directory.
func Parse(spec string) (string, Source, error) {
	r := csv.NewReader(strings.NewReader(spec))
	fields, err := r.Read()
	if err != nil {
		return "", Source{}, fmt.Errorf("parse secret %q: %w", spec, err)
	}
	var id, typ string
	var s Source
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return "", Source{}, fmt.Errorf("parse secret %q: field %q must be a key=value pair", spec, f)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "type":
			if v != "file" && v != "env" {
				return "", Source{}, fmt.Errorf("parse secret %q: unsupported secret type %q", spec, v)
			}
			typ = v
		case "id":
			id = v
		case "src", "source":
			s.File = v
		case "env":
			s.Env = v
		default:
			return "", Source{}, fmt.Errorf("parse secret %q: unexpected key %q", spec, k)
		}
	}
	if typ == "env" && s.Env == "" {
		s.Env, s.File = s.File, ""
	}
	if id == "" {
		switch {
		case s.File != "":
			id = filepath.Base(s.File)
		case s.Env != "":
			id = s.Env
		default:
			return "", Source{}, fmt.Errorf("parse secret %q: no id", spec)
		}
	}
	if s.File == "" && s.Env == "" {
		s.Env = id
	}
	if s.File != "" {
		if s.File, err = filepath.Abs(s.File); err != nil {
			return "", Source{}, fmt.Errorf("parse secret %q: %w", spec, err)
		}
	}
	return id, s, nil
}

// Value reads the secret. ok is false when its file or variable does not
// exist; a value larger than MaxSize is an error.
func (s Source) Value() (val []byte, ok bool, err error) {
	if s.File != "" {
		f, err := os.Open(s.File)
		if errors.Is(err, os.ErrNotExist) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		defer f.Close()
		val, err = io.ReadAll(io.LimitReader(f, MaxSize+1))
		if err != nil {
			return nil, false, err
		}
	} else {
		v, set := os.LookupEnv(s.Env)
		if !set {
			return nil, false, nil
		}
		val = []byte(v)
	}
	if len(val) > MaxSize {
		return nil, false, fmt.Errorf("secret is larger than %d bytes", MaxSize)
	}
	return val, true, nil
}

// WriteFile writes data into the new file p with the mode (default 0400)
// and owner (default 0:0) a secret mount asks for; nil means the default.
// p must not exist.
func WriteFile(p string, data []byte, mode, uid, gid *uint64) error {
	perm := os.FileMode(0o400)
	if mode != nil {
		perm = os.FileMode(*mode) & os.ModePerm
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	u, g := 0, 0
	if uid != nil {
		u = int(*uid)
	}
	if gid != nil {
		g = int(*gid)
	}
	if err := os.Lchown(p, u, g); err != nil {
		return err
	}
	return os.Chmod(p, perm)
}

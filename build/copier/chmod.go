package copier

import (
	"fmt"
	"strconv"
	"strings"
)

// chmod is a parsed --chmod value: an octal mode or chmod(1) symbolic
// clauses, applied with a zero umask as BuildKit does.
type chmod struct {
	text    string
	octal   bool
	bits    uint32 // the octal mode, at most 07777
	clauses []chmodClause
}

type chmodClause struct {
	who     uint32 // rwx bits of the classes named (0777 when none is)
	actions []chmodAction
}

type chmodAction struct {
	op       byte   // '+', '-' or '='
	perms    string // letters from "rwxXst"
	copyFrom byte   // 'u', 'g' or 'o' for "g=u"; 0 otherwise
}

// parseChmod parses s; "" yields nil (keep the source modes).
func parseChmod(s string) (*chmod, error) {
	if s == "" {
		return nil, nil
	}
	nonOctal := fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", s)
	if v, err := strconv.ParseUint(s, 8, 32); err == nil {
		if v > 0o7777 {
			return nil, nonOctal
		}
		return &chmod{text: s, octal: true, bits: uint32(v)}, nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		return nil, nonOctal
	}
	c := &chmod{text: s}
	for _, part := range strings.Split(s, ",") {
		cl, err := parseClause(part)
		if err != nil {
			return nil, fmt.Errorf("invalid chmod parameter: '%v': %w", s, err)
		}
		c.clauses = append(c.clauses, cl)
	}
	return c, nil
}

func parseClause(s string) (chmodClause, error) {
	var cl chmodClause
	i := 0
	for ; i < len(s) && strings.IndexByte("ugoa", s[i]) >= 0; i++ {
		switch s[i] {
		case 'u':
			cl.who |= 0o700
		case 'g':
			cl.who |= 0o070
		case 'o':
			cl.who |= 0o007
		case 'a':
			cl.who |= 0o777
		}
	}
	if cl.who == 0 {
		cl.who = 0o777
	}
	if i == len(s) {
		return cl, fmt.Errorf("clause %q has no operator", s)
	}
	for i < len(s) {
		a := chmodAction{op: s[i]}
		if strings.IndexByte("+-=", a.op) < 0 {
			return cl, fmt.Errorf("clause %q: unexpected %q", s, s[i])
		}
		i++
		if i < len(s) && strings.IndexByte("ugo", s[i]) >= 0 {
			a.copyFrom = s[i]
			i++
		} else {
			j := i
			for i < len(s) && strings.IndexByte("rwxXst", s[i]) >= 0 {
				i++
			}
			a.perms = s[j:i]
		}
		cl.actions = append(cl.actions, a)
	}
	return cl, nil
}

// apply returns the permission bits (07777) that an entry with the
// permission bits mode gets.
func (c *chmod) apply(mode uint32, isDir bool) uint32 {
	mode &= 0o7777
	if c == nil {
		return mode
	}
	if c.octal {
		return c.bits
	}
	for _, cl := range c.clauses {
		for _, a := range cl.actions {
			mode = a.apply(mode, cl.who, isDir)
		}
	}
	return mode
}

func (a chmodAction) apply(mode, who uint32, isDir bool) uint32 {
	var bits uint32
	if a.copyFrom != 0 {
		var v uint32
		switch a.copyFrom {
		case 'u':
			v = mode >> 6 & 7
		case 'g':
			v = mode >> 3 & 7
		case 'o':
			v = mode & 7
		}
		bits = (v<<6 | v<<3 | v) & who
	}
	for _, p := range a.perms {
		switch p {
		case 'r':
			bits |= 0o444 & who
		case 'w':
			bits |= 0o222 & who
		case 'x':
			bits |= 0o111 & who
		case 'X':
			if isDir || mode&0o111 != 0 {
				bits |= 0o111 & who
			}
		case 's':
			if who&0o700 != 0 {
				bits |= 0o4000
			}
			if who&0o070 != 0 {
				bits |= 0o2000
			}
		case 't':
			if who&0o007 != 0 {
				bits |= 0o1000
			}
		}
	}
	switch a.op {
	case '+':
		mode |= bits
	case '-':
		mode &^= bits
	case '=':
		clear := who
		if who&0o700 != 0 {
			clear |= 0o4000
		}
		if who&0o070 != 0 {
			clear |= 0o2000
		}
		if who&0o007 != 0 {
			clear |= 0o1000 // GNU chmod counts the sticky bit as "o"
		}
		mode = mode&^clear | bits
	}
	return mode
}

// createdPerm is the mode of directories that Copy creates: 0755, or the
// permission bits of an octal --chmod (BuildKit passes the octal mode to
// its MkdirAll; special bits are dropped there).
func (c *chmod) createdPerm() uint32 {
	if c != nil && c.octal {
		return c.bits & 0o777
	}
	return 0o755
}

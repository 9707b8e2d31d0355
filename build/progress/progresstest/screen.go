// Package progresstest holds what tests of the tty progress view share: a
// pseudo-terminal to draw on, and a small terminal emulator that replays
// what was drawn and returns the final screen.
package progresstest

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/creack/pty"

	"builder/internal/testenv"
)

// screen is a small terminal emulator: enough of VT100 to replay what the
// tty progress writes (printable text, CR, LF, cursor up, erase line and
// erase below) and show the final screen.
type screen struct {
	rows     [][]rune
	row, col int
	width    int
}

var csiRe = regexp.MustCompile(`^\x1b\[(\d*)([A-Za-z])`)

func (s *screen) ensure() {
	for len(s.rows) <= s.row {
		s.rows = append(s.rows, nil)
	}
}

func (s *screen) feed(t testing.TB, b []byte) {
	for len(b) > 0 {
		if m := csiRe.FindSubmatch(b); m != nil {
			n := 1
			if len(m[1]) > 0 {
				n, _ = strconv.Atoi(string(m[1]))
			}
			s.ensure()
			switch m[2][0] {
			case 'A':
				s.row -= n
				if s.row < 0 {
					t.Fatalf("cursor moved above the screen")
				}
			case 'K':
				if s.col < len(s.rows[s.row]) {
					s.rows[s.row] = s.rows[s.row][:s.col]
				}
			case 'J':
				if s.col < len(s.rows[s.row]) {
					s.rows[s.row] = s.rows[s.row][:s.col]
				}
				s.rows = s.rows[:s.row+1]
			default:
				t.Fatalf("unexpected escape %q", m[0])
			}
			b = b[len(m[0]):]
			continue
		}
		if b[0] == 0x1b {
			t.Fatalf("unexpected escape at %q", b[:min(len(b), 10)])
		}
		r, size := []rune(string(b[:utf8Len(b)]))[0], utf8Len(b)
		b = b[size:]
		switch r {
		case '\r':
			s.col = 0
		case '\n':
			s.row++
		default:
			s.ensure()
			for len(s.rows[s.row]) < s.col {
				s.rows[s.row] = append(s.rows[s.row], ' ')
			}
			if s.col < len(s.rows[s.row]) {
				s.rows[s.row][s.col] = r
			} else {
				s.rows[s.row] = append(s.rows[s.row], r)
			}
			s.col++
			if s.col > s.width {
				t.Errorf("line wider than the terminal: %q", string(s.rows[s.row]))
			}
		}
	}
}

func utf8Len(b []byte) int {
	switch {
	case b[0] < 0x80:
		return 1
	case b[0]>>5 == 6:
		return 2
	case b[0]>>4 == 14:
		return 3
	}
	return 4
}

func (s *screen) text() string {
	var lines []string
	for _, r := range s.rows {
		lines = append(lines, strings.TrimRight(string(r), " "))
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

// Replay runs raw, what was written to a terminal width columns wide,
// through the emulator and returns the final screen, trailing blanks cut.
// It fails t on escapes the tty view never writes, on a cursor moved above
// the screen and on lines wider than the terminal.
func Replay(t testing.TB, raw []byte, width int) string {
	t.Helper()
	s := &screen{width: width}
	s.feed(t, raw)
	return s.text()
}

// OpenPTY returns a pseudo-terminal of the given size and a channel that
// yields everything written to it once the terminal side is closed. The
// test skips where no pseudo-terminal can be opened.
func OpenPTY(t testing.TB, cols, rows int) (*os.File, <-chan []byte) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		testenv.Skip(t, "no pseudo-terminal: %v", err)
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)}); err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		io.Copy(&buf, ptmx) // ends with EIO when tty is closed
		ptmx.Close()
		out <- buf.Bytes()
	}()
	t.Cleanup(func() { tty.Close() })
	return tty, out
}

package build

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

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

func (s *screen) feed(t *testing.T, b []byte) {
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

// openPTY returns a pseudo-terminal of the given size and a channel that
// yields everything written to it once the terminal side is closed.
func openPTY(t *testing.T, cols, rows int) (*os.File, <-chan []byte) {
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

func TestProgressTTYBuild(t *testing.T) {
	f := newFixture(t)
	dir := copyCase(t, "builds/progress")
	tty, out := openPTY(t, 100, 40)
	if m, err := ParseProgressMode("auto", tty); err != nil || m != ProgressTTY {
		t.Fatalf("auto on a terminal = %q, %v; want tty", m, err)
	}
	p := NewProgressMode(tty, ProgressTTY)
	res, _ := f.mustBuild(dir, func(o *Options) { o.Progress = p })
	p.Printf("image %s", res.ManifestDigest)
	p.Close()
	tty.Close()
	raw := <-out
	var s screen
	s.width = 100
	s.feed(t, raw)
	final := s.text()
	t.Logf("final screen:\n%s", final)
	for i, want := range []string{
		`#1 \[stage-0 1/5\] FROM \$BASE +DONE \d+\.\ds`,
		`#2 \[stage-0 2/5\] RUN echo one && echo two +DONE \d+\.\ds`,
		`#3 \[stage-0 3/5\] COPY hello.txt /hello.txt +DONE \d+\.\ds`,
		`#4 \[stage-0 4/5\] ENV GREETING=hi +DONE \d+\.\ds`,
		`#5 \[stage-0 5/5\] RUN cat /hello.txt +DONE \d+\.\ds`,
		`image sha256:[0-9a-f]{64}`,
		`\[\+\] Finished \d+\.\ds \(5/5\)`,
	} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).MatchString(final) {
			t.Errorf("final screen lacks line %d: %s", i, want)
		}
	}
	if strings.Contains(final, "│") {
		t.Errorf("output of finished steps is still on the screen")
	}
}

func TestProgressTTYNarrowAndFast(t *testing.T) {
	tty, out := openPTY(t, 30, 8)
	ticks := make(chan time.Time)
	p := &Progress{}
	r := newTTYRendererTicks(p, tty, ticks)
	p.r = r
	var steps []*StepProgress
	for i := 0; i < 12; i++ {
		steps = append(steps, p.Step("[stage-0 "+strconv.Itoa(i+1)+"/12] RUN a command longer than the terminal"))
	}
	for i := 0; i < 2000; i++ {
		steps[0].Write([]byte("a long line of output\twith a tab and \x1b[31mcolour\n"))
	}
	// Three redraws while every step runs; each send returns once the
	// renderer has taken the tick, so the previous redraw is done.
	for i := range 3 {
		ticks <- r.begin.Add(time.Duration(i+1) * ttyRefresh)
	}
	for i := len(steps) - 1; i >= 0; i-- {
		steps[i].Done()
	}
	p.Close()
	tty.Close()
	var s screen
	s.width = 30
	s.feed(t, <-out)
	final := s.text()
	for i := 1; i <= 12; i++ {
		if !regexp.MustCompile(`(?m)^#` + strconv.Itoa(i) + ` .* DONE \d+\.\ds$`).MatchString(final) {
			t.Errorf("step %d not DONE on the final screen:\n%s", i, final)
		}
	}
}

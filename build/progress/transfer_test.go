package progress

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"builder/build/progress/progresstest"
)

// TestTransfers checks how each mode shows a download: the tty view
// shows bytes and rate while it runs, and every mode reports size, time and
// rate when it ends.
func TestTransfers(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		var out bytes.Buffer
		p := New(&out, Plain)
		tr := p.Transfer("pull sha256:0123456789ab", 3<<20)
		tr.Add(1 << 20)
		tr.Add(2 << 20)
		tr.Done(nil)
		failed := p.Transfer("push app:1", 0)
		failed.Set(512)
		failed.Done(errors.New("connection reset"))
		p.Close()
		want := regexp.MustCompile(`^pull sha256:0123456789ab 3\.0 MiB in \d+\.\ds \([0-9.]+ [KMG]?i?B/s\)\n` +
			`push app:1 failed after 512 B in \d+\.\ds: connection reset\n$`)
		if !want.MatchString(out.String()) {
			t.Errorf("plain output:\n%s", out.String())
		}
	})
	t.Run("json", func(t *testing.T) {
		var out bytes.Buffer
		p := New(&out, JSON)
		tr := p.Transfer("pull sha256:0123456789ab", 100)
		tr.Add(100)
		tr.Done(nil)
		tr.Done(errors.New("ignored: only the first Done counts"))
		p.Close()
		var evs []jsonEvent
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var e jsonEvent
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("not JSON: %q", l)
			}
			evs = append(evs, e)
		}
		if len(evs) != 2 || evs[0].Status != "transfer-started" || evs[0].Total != 100 ||
			evs[1].Status != "transfer-done" || evs[1].Bytes == nil || *evs[1].Bytes != 100 || evs[1].Transfer != "pull sha256:0123456789ab" {
			t.Errorf("events: %s", out.String())
		}
	})
	t.Run("tty", func(t *testing.T) {
		tty, screenOut := progresstest.OpenPTY(t, 80, 24)
		p := New(tty, TTY)
		sp := p.Step("[1/1] FROM busybox")
		tr := p.Transfer("pull sha256:0123456789ab", 10<<20)
		tr.Add(4 << 20)
		// Draw the live view now rather than waiting for the ticker.
		p.mu.Lock()
		p.r.(*ttyRenderer).redraw(time.Now(), nil)
		p.mu.Unlock()
		tr.Add(6 << 20)
		tr.Done(nil)
		sp.Done()
		p.Close()
		tty.Close()
		raw := <-screenOut
		if !regexp.MustCompile(` => pull sha256:0123456789ab 4\.0 MiB / 10\.0 MiB [0-9.]+ [KMG]?i?B/s`).Match(raw) {
			t.Errorf("the live view never showed the transfer's bytes and rate:\n%q", raw)
		}
		final := progresstest.Replay(t, raw, 80)
		if !regexp.MustCompile(`(?m)^pull sha256:0123456789ab 10\.0 MiB in \d+\.\ds`).MatchString(final) || strings.Contains(final, " => ") {
			t.Errorf("final screen should keep the summary and drop the live line:\n%s", final)
		}
	})
}

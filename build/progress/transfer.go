package progress

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Transfer is the progress of one download or upload: a blob pulled for a
// FROM, or an image pushed. The tty view shows the bytes moved so far and
// the rate while it runs; every mode reports the size, time and rate when
// it ends. Add is safe to call from any goroutine without locking, so a
// transfer can count the bytes of a stream as they pass. A *Transfer is a
// registry.Meter.
type Transfer struct {
	p     *Progress
	label string
	total int64 // bytes expected, or 0 when unknown
	moved atomic.Int64
	start time.Time

	// Set under p.mu when the transfer ends.
	ended bool
	end   time.Time
	err   error
}

// Transfer starts showing a transfer of total bytes (0 if unknown) under
// label, e.g. "pull sha256:1a2b3c4d5e6f".
func (p *Progress) Transfer(label string, total int64) *Transfer {
	t := &Transfer{p: p, label: label, total: total, start: time.Now()}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.r.transferStart(t)
	return t
}

// Add counts n more bytes moved.
func (t *Transfer) Add(n int64) { t.moved.Add(n) }

// Set records that n bytes have moved in all, for senders that report
// totals rather than increments.
func (t *Transfer) Set(n int64) { t.moved.Store(n) }

// Done ends the transfer, with err if it failed. Only the first call counts.
func (t *Transfer) Done(err error) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	if t.ended {
		return
	}
	t.ended, t.end, t.err = true, time.Now(), err
	t.p.r.transferEnd(t, t.end)
}

// Moved returns the bytes moved so far.
func (t *Transfer) Moved() int64 { return t.moved.Load() }

// rate is the average speed in bytes a second up to now.
func (t *Transfer) rate(now time.Time) float64 {
	d := now.Sub(t.start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(t.Moved()) / d
}

// live is the tty line of a running transfer: bytes of total, and the rate.
func (t *Transfer) live(now time.Time) string {
	amount := Size(t.Moved())
	if t.total > 0 {
		amount += " / " + Size(t.total)
	}
	return fmt.Sprintf("%s %s %s/s", t.label, amount, Size(int64(t.rate(now))))
}

// summary is the line printed when the transfer ends.
func (t *Transfer) summary() string {
	d := t.end.Sub(t.start)
	if t.err != nil {
		return fmt.Sprintf("%s failed after %s in %.1fs: %v", t.label, Size(t.Moved()), d.Seconds(), t.err)
	}
	return fmt.Sprintf("%s %s in %.1fs (%s/s)", t.label, Size(t.Moved()), d.Seconds(), Size(int64(t.rate(t.end))))
}

// Size spells a byte count in binary units for progress messages:
// "512 B", "3.0 MiB".
func Size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

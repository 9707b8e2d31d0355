package registry

import "io"

// A Meter counts the bytes of one transfer for a progress display: a blob
// pulled, or an image pushed. Add and Set may be called from any goroutine;
// Done is called once, when the transfer ends.
type Meter interface {
	Add(n int64)
	Set(n int64)
	Done(err error)
}

// MeterFunc starts a Meter for a transfer of size bytes (0 if unknown)
// described by label, e.g. "download sha256:0123456789ab".
type MeterFunc func(label string, size int64) Meter

// Start returns f's meter for the transfer, or one that counts nothing if
// f is nil.
func (f MeterFunc) Start(label string, size int64) Meter {
	if f == nil {
		return noMeter{}
	}
	return f(label, size)
}

type noMeter struct{}

func (noMeter) Add(int64)  {}
func (noMeter) Set(int64)  {}
func (noMeter) Done(error) {}

// meteredReader counts what passes through it.
type meteredReader struct {
	r io.Reader
	m Meter
}

func (r meteredReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.m.Add(int64(n))
	return n, err
}

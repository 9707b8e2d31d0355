package build

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// writeReuseContext writes 800 files of 0-16 KiB (half text, half random)
// and two of 3 MiB under dir/context/src: a layer of several gzip members.
func writeReuseContext(t *testing.T, dir string) {
	t.Helper()
	src := filepath.Join(dir, "context", "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 5))
	for i := range 802 {
		size := rng.IntN(16 << 10)
		if i >= 800 {
			size = 3 << 20
		}
		data := make([]byte, size)
		if i%2 == 0 {
			for j := range data {
				data[j] = "abcdefgh \n"[rng.IntN(10)]
			}
		} else {
			_, _ = rand.NewChaCha8([32]byte{byte(i), byte(i >> 8)}).Read(data)
		}
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%04d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func layerDigests(t *testing.T, res *Result) []v1.Hash {
	t.Helper()
	ls, err := res.Image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// TestRebuildReusesMembers: after one file of the context changes, the
// rebuilt COPY and RUN layers reuse the unchanged gzip members of the
// last build of the same steps, and are the same blobs a new store
// writes; a corrupt previous blob changes nothing but what is reused.
func TestRebuildReusesMembers(t *testing.T) {
	for _, corrupt := range []bool{false, true} {
		t.Run(fmt.Sprintf("corrupt=%v", corrupt), func(t *testing.T) {
			// The RUN's file times come from the clock without an epoch.
			epoch := time.Unix(1700000000, 0)
			withEpoch := func(o *Options) { o.Epoch = &epoch }
			f := newFixture(t)
			dir := copyCase(t, "builds/reuse-members")
			writeReuseContext(t, dir)
			first, _ := f.mustBuild(dir, withEpoch)
			if corrupt {
				for _, d := range layerDigests(t, first)[1:] { // the COPY and RUN layers
					p := f.b.store.Path(d)
					data, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					for off := 100; off < len(data); off += len(data) / 7 {
						data[off] ^= 1
					}
					if err := os.WriteFile(p, data, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			changed := filepath.Join(dir, "context", "src", "f0400")
			fh, err := os.OpenFile(changed, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(fh, "one more line")
			fh.Close()
			again, log := f.mustBuild(dir, withEpoch)
			notes := strings.Count(log, "gzip members")
			if notes != 2 {
				t.Errorf("%d steps reused gzip members, want 2 (COPY and RUN):\n%s", notes, log)
			}

			fresh, _ := newFixture(t).mustBuild(dir, withEpoch)
			got, want := layerDigests(t, again), layerDigests(t, fresh)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("layers with reuse %v, in a new store %v", got, want)
			}
		})
	}
}

package push

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"builder/build/pull"
	"builder/build/pull/faultproxy"
	"builder/build/push/registrytest"
	"builder/build/registry"
	"builder/export"
	"builder/snapshot/content"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// benchImage writes an image of layers layers of size bytes of random data
// each (uncompressed tar layers, so the figures measure transfer, not
// gzip) into a store under dir and returns it, backed by the store.
func benchImage(b testing.TB, dir string, layers int, size int64) v1.Image {
	b.Helper()
	ctx := context.Background()
	s, err := content.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{42})
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for i := range layers {
		pr, pw := io.Pipe()
		go func() {
			tw := tar.NewWriter(pw)
			err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data-%d", i), Mode: 0o644, Size: size, ModTime: time.Unix(0, 0)})
			if err == nil {
				_, err = io.CopyN(tw, rng, size)
			}
			if err == nil {
				err = tw.Close()
			}
			pw.CloseWithError(err)
		}()
		d, n, err := s.WriteBlob(ctx, pr, v1.Hash{})
		if err != nil {
			b.Fatal(err)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, d)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Digest: d, Size: n})
	}
	put := func(v any) v1.Descriptor {
		raw, err := json.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		d, n, err := s.WriteBlob(ctx, bytes.NewReader(raw), v1.Hash{})
		if err != nil {
			b.Fatal(err)
		}
		return v1.Descriptor{Digest: d, Size: n}
	}
	m.Config = put(cfg)
	m.Config.MediaType = types.OCIConfigJSON
	img, err := export.LoadImage(s, put(m).Digest)
	if err != nil {
		b.Fatal(err)
	}
	return img
}

// BenchmarkRegistryThroughput pushes a 512 MiB image (8 layers of random
// data) to Debian's docker-registry on loopback, pushes it again (every
// blob found by HEAD, nothing sent), then pulls it into an empty store,
// reporting MB/s for the transfers and seconds for the repeated push.
func BenchmarkRegistryThroughput(b *testing.B) {
	const layers, layerSize = 8, 64 << 20
	reg := registrytest.Start(b, registrytest.Options{})
	reg.DockerConfig(b)
	img := benchImage(b, b.TempDir(), layers, layerSize)
	total, err := imageBytes(img)
	if err != nil {
		b.Fatal(err)
	}
	mb := float64(total) / 1e6
	ctx := context.Background()
	// The same push through a proxy that resets every 8th request.
	px := faultproxy.Start(b, reg.Addr, faultproxy.Rule{Match: faultproxy.Any, Key: faultproxy.All, Then: faultproxy.Reset, Every: 8})
	var pushS, repushS, pullS, faultS float64
	uploads := 0 // blob upload requests of the second pushes
	b.ResetTimer()
	for i := range b.N {
		ref := fmt.Sprintf("%s/bench/img%d:1", reg.Addr, i)
		start := time.Now()
		if _, err := Push(ctx, registry.New(registry.Options{}), img, []string{ref}, Options{}); err != nil {
			b.Fatal(err)
		}
		pushS += time.Since(start).Seconds()

		start = time.Now()
		if _, err := Push(ctx, registry.New(registry.Options{}), img, []string{fmt.Sprintf("%s/bench/faults%d:1", px.Addr, i)}, Options{}); err != nil {
			b.Fatal(err)
		}
		faultS += time.Since(start).Seconds()

		rec := &recorder{}
		start = time.Now()
		if _, err := Push(ctx, registry.New(registry.Options{Transport: rec}), img, []string{ref}, Options{}); err != nil {
			b.Fatal(err)
		}
		repushS += time.Since(start).Seconds()
		uploads += rec.count("POST", "/blobs/uploads/") + rec.count("PATCH", "/blobs/") + rec.count("PUT", "/blobs/")

		b.StopTimer()
		s, err := content.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start = time.Now()
		if _, err := pull.Pull(ctx, registry.New(registry.Options{}), s, ref, pull.Options{}); err != nil {
			b.Fatal(err)
		}
		pullS += time.Since(start).Seconds()
	}
	n := float64(b.N)
	b.ReportMetric(mb*n/pushS, "push-MB/s")
	b.ReportMetric(mb*n/faultS, "push-resets-MB/s")
	b.ReportMetric(mb*n/pullS, "pull-MB/s")
	b.ReportMetric(repushS/n, "repush-s")
	b.ReportMetric(float64(uploads)/n, "repush-uploads")
	b.Logf("%.0f MB in %d layers: push %.1f MB/s (%.1f MB/s with every 8th request reset, %d resets), second push %.3f s with %d blob uploads, pull %.1f MB/s",
		mb, layers, mb*n/pushS, mb*n/faultS, px.Injected(faultproxy.Reset), repushS/n, uploads, mb*n/pullS)
}

// imageBytes is the size of img's blobs: config and layers.
func imageBytes(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

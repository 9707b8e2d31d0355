package build

import (
	"runtime"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build/buildtest"
	"builder/export"
)

func TestParsePlatforms(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "linux/amd64", want: "linux/amd64"},
		{in: "linux/amd64,linux/arm64", want: "linux/amd64,linux/arm64"},
		{in: " linux/arm64 , linux/amd64 ", want: "linux/arm64,linux/amd64"},
		{in: "linux/aarch64,linux/arm64/v8,linux/arm64", want: "linux/arm64"},
		{in: "linux/x86_64,linux/amd64", want: "linux/amd64"},
		{in: "linux/arm", want: "linux/arm/v7"},
		{in: "linux/arm/7,linux/armhf", want: "linux/arm/v7"},
		{in: "linux/arm/v6,linux/armel", want: "linux/arm/v6"},
		{in: "Linux/ARM64", want: "linux/arm64"},
		{in: "linux/i386", want: "linux/386"},
		{in: "", err: "no platform"},
		{in: ",", err: "no platform"},
		{in: "linux", err: "want os/arch"},
		{in: "linux/", err: "want os/arch"},
		{in: "linux/arm/v7/x", err: "want os/arch"},
		{in: "linux/am d64", err: "letters and digits"},
		{in: "../../etc/passwd", err: "want os/arch"},
		{in: "linux/$(id)", err: "letters and digits"},
		{in: "linux/" + strings.Repeat("a", 100), err: "longer than"},
		{in: strings.Repeat("linux/amd64,linux/arm64,", 5) + "linux/riscv64", want: "linux/amd64,linux/arm64,linux/riscv64"},
		{in: manyPlatforms(MaxPlatforms + 1), err: "at most 16"},
	} {
		ps, err := ParsePlatforms(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		var got []string
		for _, p := range ps {
			got = append(got, export.PlatformString(p))
		}
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("%q = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// manyPlatforms lists n distinct platforms.
func manyPlatforms(n int) string {
	var ps []string
	for i := 0; i < n; i++ {
		ps = append(ps, "linux/arch"+strconv.Itoa(i))
	}
	return strings.Join(ps, ",")
}

// TestPlatformArgs builds testdata/builds/platform-args for two
// platforms and checks BuildKit's scoping of the automatic args in each
// platform's image: a stage sees only those it declares with ARG, and
// FROM --platform=$BUILDPLATFORM runs natively.
func TestPlatformArgs(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the expected uname -m values are an amd64 host's")
	}
	f := newFixture(t)
	base := buildtest.MultiArchRegistry(t)
	dir := copyCase(t, "builds/platform-args")
	res, log := f.mustBuild(dir, func(o *Options) {
		o.BuildArgs["BASE"] = base
		o.Platforms = []v1.Platform{{OS: "linux", Architecture: "arm64", Variant: "v8"}, {OS: "linux", Architecture: "amd64"}}
	})
	if res.Index == nil || res.Image != nil || len(res.Images) != 2 {
		t.Fatalf("result: %+v", res)
	}
	mt, _ := res.Index.MediaType()
	if d, _ := res.Index.Digest(); d != res.ManifestDigest || mt != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("index %s %s, result %s", d, mt, res.ManifestDigest)
	}
	want := map[string]map[string]string{
		"linux/arm64": {"scoped": "target=linux/arm64 build=\n", "build-arch": "x86_64\n", "final": "arm64/::aarch64\n"},
		"linux/amd64": {"scoped": "target=linux/amd64 build=\n", "build-arch": "x86_64\n", "final": "amd64/::x86_64\n"},
	}
	for i, pi := range res.Images {
		p := export.PlatformString(pi.Platform)
		if i == 0 && p != "linux/arm64" {
			t.Errorf("first platform %s (arm64/v8 normalizes to linux/arm64)", p)
		}
		u := unpack(t, pi.Image)
		if u.config.Architecture != pi.Platform.Architecture {
			t.Errorf("%s: config architecture %s", p, u.config.Architecture)
		}
		for file, content := range want[p] {
			if got := readFile(t, u.rootfs, file); got != content {
				t.Errorf("%s: /%s = %q, want %q", p, file, got, content)
			}
		}
	}
	if !strings.Contains(log, "emulating linux/arm64 with ") || strings.Count(log, "emulating") != 1 {
		t.Errorf("emulation notes:\n%s", log)
	}
}

// TestPlatformBaseResolution: a base index resolves per platform,
// variant-aware; a platform the base lacks fails with the list it has.
func TestPlatformBaseResolution(t *testing.T) {
	f := newFixture(t)
	base := buildtest.MultiArchRegistry(t)
	dir := copyCase(t, "builds/platform-args")
	for _, tc := range []struct {
		platforms []v1.Platform
		err       string
	}{
		{[]v1.Platform{{OS: "linux", Architecture: "s390x"}}, "index has linux/amd64, linux/arm64"},
		{[]v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm", Variant: "v7"}}, "no image for platform linux/arm/v7"},
	} {
		_, log, err := f.build(dir, func(o *Options) {
			o.BuildArgs["BASE"] = base
			o.Platforms = tc.platforms
		})
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: err = %v, want %q\n%s", tc.platforms, err, tc.err, log)
		}
		if err != nil && !strings.Contains(err.Error(), "Dockerfile:10: FROM $BASE") {
			t.Errorf("%v: error names no Dockerfile line: %v", tc.platforms, err)
		}
	}
}

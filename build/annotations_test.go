package build

import (
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestParseAnnotationsPerPlatform checks that TYPE[PLATFORMS]: values
// reach only the images of the platforms they name, and that a malformed
// value is refused for every platform, even one it does not name.
func TestParseAnnotationsPerPlatform(t *testing.T) {
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	armv7 := v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	for _, tc := range []struct {
		name     string
		specs    []string
		platform v1.Platform
		want     Annotations
		err      string
	}{
		{"plain goes on every manifest", []string{"k=v"}, arm64,
			Annotations{Manifest: map[string]string{"k": "v"}}, ""},
		{"named platform", []string{"manifest[linux/arm64]:k=v"}, arm64,
			Annotations{Manifest: map[string]string{"k": "v"}}, ""},
		{"other platform drops it", []string{"manifest[linux/arm64]:k=v"}, amd64,
			Annotations{}, ""},
		{"list of platforms", []string{"manifest[linux/amd64,linux/arm64]:k=v"}, amd64,
			Annotations{Manifest: map[string]string{"k": "v"}}, ""},
		{"variantless name matches a variant", []string{"manifest[linux/arm]:k=v"}, armv7,
			Annotations{Manifest: map[string]string{"k": "v"}}, ""},
		{"variant must match", []string{"manifest[linux/arm/v6]:k=v"}, armv7,
			Annotations{}, ""},
		{"several types", []string{"manifest,manifest-descriptor[linux/amd64]:k=a:b"}, amd64,
			Annotations{Manifest: map[string]string{"k": "a:b"}, ManifestDescriptor: map[string]string{"k": "a:b"}}, ""},
		{"index level", []string{"index:org.opencontainers.image.url=https://x"}, amd64,
			Annotations{Index: map[string]string{"org.opencontainers.image.url": "https://x"}}, ""},
		{"later value wins", []string{"k=1", "manifest[linux/amd64]:k=2"}, amd64,
			Annotations{Manifest: map[string]string{"k": "2"}}, ""},
		{"bad type for another platform", []string{"bogus[linux/arm64]:k=v"}, amd64,
			Annotations{}, `unknown type "bogus"`},
		{"no key", []string{"manifest[linux/arm64]:=v"}, amd64,
			Annotations{}, "want [TYPE:]KEY=VALUE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAnnotations(tc.specs, tc.platform)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

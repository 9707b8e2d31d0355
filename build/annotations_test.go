package build

import (
	"fmt"
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
		{"index ignores the platform", []string{"index[linux/arm64]:k=v"}, amd64,
			Annotations{Index: map[string]string{"k": "v"}}, ""},
		{"every level", []string{"index,index-descriptor,manifest,manifest-descriptor:k=v"}, amd64,
			Annotations{Index: map[string]string{"k": "v"}, IndexDescriptor: map[string]string{"k": "v"},
				Manifest: map[string]string{"k": "v"}, ManifestDescriptor: map[string]string{"k": "v"}}, ""},
		{"empty value is skipped", []string{""}, amd64, Annotations{}, ""},
		{"empty annotation value", []string{"k="}, amd64, Annotations{Manifest: map[string]string{"k": ""}}, ""},
		{"bad type for another platform", []string{"bogus[linux/arm64]:k=v"}, amd64,
			Annotations{}, `unknown annotation type "bogus"`},
		{"no key", []string{"manifest[linux/arm64]:=v"}, amd64,
			Annotations{}, "the key is empty"},
		{"no key without type", []string{"=v"}, amd64,
			Annotations{}, "the key is empty"},
		{"key with a space", []string{"index:my key=v"}, amd64,
			Annotations{}, "holds white space"},
		{"key with a newline", []string{"k\nx=v"}, amd64,
			Annotations{}, "holds white space"},
		{"no equals", []string{"index:k"}, amd64,
			Annotations{}, `invalid annotation "index:k", expected key=value`},
		{"empty type", []string{":k=v"}, amd64,
			Annotations{}, `invalid annotation type "", expected type and optional platform in square brackets`},
		{"upper-case type", []string{"Index:k=v"}, amd64,
			Annotations{}, `invalid annotation type "Index"`},
		{"unterminated platform", []string{"manifest[linux/amd64:k=v"}, amd64,
			Annotations{}, `invalid annotation type "manifest[linux/amd64"`},
		{"platform with a dot", []string{"manifest[../etc]:k=v"}, amd64,
			Annotations{}, `invalid annotation type`},
		{"unparsable platform", []string{"manifest[linux]:k=v"}, amd64,
			Annotations{}, `invalid platform "linux"`},
		{"empty platform in a list", []string{"manifest[linux/amd64,]:k=v"}, amd64,
			Annotations{}, `invalid platform ""`},
		{"list and another type", []string{"manifest[linux/arm64,linux/amd64],index:k=v"}, amd64,
			Annotations{Manifest: map[string]string{"k": "v"}, Index: map[string]string{"k": "v"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, s := range tc.specs {
				tc.specs[i] = strings.ReplaceAll(s, `\n`, "\n")
			}
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

// TestParseAnnotationsHostile feeds --annotation values that are huge or
// many: within MaxAnnotationBytes they are kept whole, past it refused.
func TestParseAnnotationsHostile(t *testing.T) {
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("index,manifest:org.example.k%d=%d", i, i)
	}
	a, err := ParseAnnotations(many, amd64)
	if err != nil || len(a.Index) != 10000 || len(a.Manifest) != 10000 || a.Index["org.example.k9999"] != "9999" {
		t.Fatalf("10000 keys: %d, %d (%v)", len(a.Index), len(a.Manifest), err)
	}
	big := "k=" + strings.Repeat("v", MaxAnnotationBytes-2)
	if a, err := ParseAnnotations([]string{big}, amd64); err != nil || len(a.Manifest["k"]) != MaxAnnotationBytes-2 {
		t.Fatalf("a value of %d bytes: %v", MaxAnnotationBytes-2, err)
	}
	for _, specs := range [][]string{
		{big + "v"},
		{big, "x=y"},
		append(many, "k="+strings.Repeat("v", MaxAnnotationBytes)),
	} {
		if _, err := ParseAnnotations(specs, amd64); err == nil || !strings.Contains(err.Error(), "more than a manifest may carry") {
			t.Errorf("%d values, %d bytes: error %v", len(specs), len(strings.Join(specs, "")), err)
		}
	}
}

// TestCheckAnnotationPlatforms checks BuildKit's refusal of a manifest
// annotation for a platform a multi-platform build does not build.
func TestCheckAnnotationPlatforms(t *testing.T) {
	two := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm", Variant: "v7"}}
	for _, tc := range []struct {
		specs     []string
		platforms []v1.Platform
		err       string
	}{
		{[]string{"manifest[linux/amd64]:k=v"}, two, ""},
		{[]string{"manifest-descriptor[linux/arm]:k=v"}, two, ""},
		{[]string{"manifest[linux/s390x]:k=v"}, two, "invalid annotation: no platform linux/s390x found in source"},
		{[]string{"manifest,manifest-descriptor[linux/arm/v6]:k=v"}, two, "no platform linux/arm/v6 found in source"},
		{[]string{"index[linux/s390x]:k=v"}, two, ""},        // index ones ignore the platform
		{[]string{"manifest[linux/s390x]:k=v"}, two[:1], ""}, // one platform: dropped
		{[]string{"manifest[linux/amd64,linux/ppc64le]:k=v"}, two, "no platform linux/ppc64le found in source"},
	} {
		err := checkAnnotationPlatforms(tc.specs, tc.platforms)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v on %d platforms: error %v, want %q", tc.specs, len(tc.platforms), err, tc.err)
		}
	}
}

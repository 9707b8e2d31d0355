package attest

import (
	"encoding/json"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestSecretLike(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		// BuildKit's SecretsUsedInArgOrEnv cases (dockerfile_check_test.go).
		{"SECRET_PASSPHRASE", true}, {"SUPER_Secret", true}, {"password", true}, {"super_password", true},
		{"auth", true}, {"apikey", true}, {"GITHUB_TOKEN", true}, {"AWS_SECRET_ACCESS_KEY", true},
		{"git_key", true}, {"DB_PASSWD_x", true}, {"passwd", true}, {"credentials", true},
		{"PUBLIC_KEY", false}, {"public_token", false}, {"SECRET_FILE", false}, {"KEY_VERSION", false},
		{"VERSION", false}, {"tokenizer", false}, {"MONKEY", false}, {"AUTHOR", false},
	} {
		if got := SecretLike(tc.name); got != tc.want {
			t.Errorf("SecretLike(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, p := range []string{"HTTP_PROXY", "https_proxy", "no_proxy", "ALL_PROXY", "ftp_proxy"} {
		if Disclosed(p) {
			t.Errorf("Disclosed(%q) = true for a proxy arg", p)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@example.com/repo.git#main": "https://xxxxx:xxxxx@example.com/repo.git#main",
		"https://token@example.com/f":               "https://xxxxx@example.com/f",
		"http://example.com/f?x=1":                  "http://example.com/f?x=1",
		"git@github.com:o/r.git":                    "git@github.com:o/r.git",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	r := loadRecord(t)
	r.HTTP[0].URL = "http://user:hunter2@example.com/file"
	p, err := NewProvenance(r, ProvenanceOptions{Mode: ModeMax})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(p); strings.Contains(string(b), "hunter2") {
		t.Errorf("a URL's password is in the provenance")
	}
}

func TestImagePURL(t *testing.T) {
	amd64 := &v1.Platform{OS: "linux", Architecture: "amd64"}
	for _, tc := range []struct {
		typ, ref string
		p        *v1.Platform
		want     string
	}{
		{PURLDocker, "alpine:latest", amd64, "pkg:docker/alpine@latest?platform=linux%2Famd64"},
		{PURLDocker, "docker.io/library/alpine", nil, "pkg:docker/alpine@latest"},
		{PURLDocker, "docker.io/moby/buildkit:v0.26.2", nil, "pkg:docker/moby/buildkit@v0.26.2"},
		{PURLDocker, "127.0.0.1:5000/base:1", &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
			"pkg:docker/127.0.0.1%3A5000/base@1?platform=linux%2Farm64%2Fv8"},
		{PURLDocker, "ghcr.io/o/app@sha256:1111111111111111111111111111111111111111111111111111111111111111", nil,
			"pkg:docker/ghcr.io/o/app?digest=sha256:1111111111111111111111111111111111111111111111111111111111111111"},
		{PURLOCI, "app:1", nil, "pkg:oci/app@1"},
	} {
		got, err := ImagePURL(tc.typ, tc.ref, tc.p)
		if err != nil || got != tc.want {
			t.Errorf("ImagePURL(%s, %q) = %q, %v; want %q", tc.typ, tc.ref, got, err, tc.want)
		}
	}
	if _, err := ImagePURL(PURLDocker, "UPPER/Case::x", nil); err == nil {
		t.Error("ImagePURL accepted an invalid reference")
	}
}

func loadRecord(t *testing.T) *Record {
	t.Helper()
	b, err := os.ReadFile("testdata/record.json")
	if err != nil {
		t.Fatal(err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// TestProvenanceModes checks what each mode discloses: the dependencies
// always, with their digests; build args and labels only in mode=max, and
// never a proxy or secret-like one; the Dockerfile and layers only in max.
func TestProvenanceModes(t *testing.T) {
	r := loadRecord(t)
	wantDeps := []ResourceDescriptor{
		{URI: "pkg:docker/alpine@3.20?platform=linux%2Famd64", Digest: map[string]string{"sha256": strings.Repeat("1", 64)}},
		{URI: "pkg:docker/127.0.0.1%3A5000/base@1?platform=linux%2Farm64%2Fv8", Digest: map[string]string{"sha256": strings.Repeat("2", 64)}},
		{URI: "https://example.com/repo.git#v1", Digest: map[string]string{"sha1": strings.Repeat("4", 40)}},
		{URI: "http://example.com/file", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}},
	}
	for _, tc := range []struct {
		mode      string
		args      map[string]string
		complete  bool
		secrets   int
		steps     int
		dockerSrc bool
	}{
		{ModeMin, map[string]string{"target": "final"}, false, 0, 0, false},
		{ModeMax, map[string]string{"target": "final", "build-arg:VERSION": "1.2.3", "build-arg:PUBLIC_KEY": "ssh-ed25519 AAAA",
			"label:org.example.team": "build"}, true, 1, 2, true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p, err := NewProvenance(r, ProvenanceOptions{Mode: tc.mode, BuilderID: "https://ci.example/run/1"})
			if err != nil {
				t.Fatal(err)
			}
			raw, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, leak := range []string{"not-for-provenance", "GITHUB_TOKEN", "DB_PASSWORD", "PROXY", "proxy"} {
				if strings.Contains(string(raw), leak) {
					t.Errorf("provenance contains %q: %s", leak, raw)
				}
			}
			bd := p.BuildDefinition
			if bd.BuildType != BuildType || bd.ExternalParameters.Request.Frontend != "dockerfile.v0" ||
				bd.ExternalParameters.ConfigSource.Path != "Dockerfile" {
				t.Errorf("build definition = %+v", bd)
			}
			if !reflect.DeepEqual(bd.ResolvedDependencies, wantDeps) {
				t.Errorf("resolvedDependencies = %+v\nwant %+v", bd.ResolvedDependencies, wantDeps)
			}
			if !reflect.DeepEqual(bd.ExternalParameters.Request.Args, tc.args) {
				t.Errorf("args = %v, want %v", bd.ExternalParameters.Request.Args, tc.args)
			}
			if got := bd.ExternalParameters.Request.Secrets; len(got) != tc.secrets || (len(got) > 0 && got[0] != IDRef{ID: "npmrc"}) {
				t.Errorf("secrets %+v, want %d (npmrc, required once so required)", got, tc.secrets)
			}
			md := p.RunDetails.Metadata
			if md.Completeness.Request != tc.complete || md.Completeness.ResolvedDependencies || md.Hermetic {
				t.Errorf("completeness %+v, hermetic %v (a local context is incomplete; RUN had network)", md.Completeness, md.Hermetic)
			}
			if md.InvocationID != r.InvocationID || !md.StartedOn.Equal(r.Started) || !md.FinishedOn.Equal(r.Finished) ||
				p.RunDetails.Builder.ID != "https://ci.example/run/1" {
				t.Errorf("run details = %+v", p.RunDetails)
			}
			if bd.InternalParameters.BuilderPlatform != "linux/amd64" || bd.InternalParameters.BuilderVersion != "v1.0.0-test" {
				t.Errorf("internal parameters = %+v", bd.InternalParameters)
			}
			var steps int
			if bc := bd.InternalParameters.BuildConfig; bc != nil {
				steps = len(bc.Definition)
			}
			if steps != tc.steps {
				t.Errorf("%d steps, want %d", steps, tc.steps)
			}
			src := md.BuildKit.Source
			if (src != nil) != tc.dockerSrc {
				t.Fatalf("source = %+v", src)
			}
			if src != nil {
				if string(src.Infos[0].Data) != string(r.Dockerfile) || src.Infos[0].Filename != "Dockerfile" {
					t.Errorf("source info = %+v", src.Infos)
				}
				if got := md.BuildKit.Layers["step1:0"]; len(got) != 1 || len(got[0]) != 2 {
					t.Errorf("layers of step1 = %+v", got)
				}
				if l := src.Locations["step1"].Locations[0].Ranges[0]; l.Start.Line != 2 || l.End.Line != 2 {
					t.Errorf("step1 location = %+v", l)
				}
				if in := bd.InternalParameters.BuildConfig.Definition[1].Inputs; !reflect.DeepEqual(in, []string{"step0:0"}) {
					t.Errorf("step1 inputs = %v", in)
				}
			}
		})
	}
	if _, err := NewProvenance(r, ProvenanceOptions{Mode: "most"}); err == nil {
		t.Error("mode=most accepted")
	}
}

// TestProvenanceGitContext: a git context is the config source and the
// VCS metadata, and with no local source the dependencies are complete.
func TestProvenanceGitContext(t *testing.T) {
	r := loadRecord(t)
	r.Context = &GitSource{URL: "https://example.com/repo.git#main:sub", Commit: strings.Repeat("a", 40)}
	r.Network = false
	p, err := NewProvenance(r, ProvenanceOptions{Mode: ModeMin})
	if err != nil {
		t.Fatal(err)
	}
	cs := p.BuildDefinition.ExternalParameters.ConfigSource
	if cs.URI != r.Context.URL || cs.Digest["sha1"] != r.Context.Commit || cs.Path != "Dockerfile" {
		t.Errorf("configSource = %+v", cs)
	}
	md := p.RunDetails.Metadata
	if !md.Completeness.ResolvedDependencies || !md.Hermetic || md.BuildKit.VCS["revision"] != r.Context.Commit {
		t.Errorf("metadata = %+v", md)
	}
	if p.BuildDefinition.ExternalParameters.Request.Locals != nil {
		t.Errorf("locals = %+v for a git context", p.BuildDefinition.ExternalParameters.Request.Locals)
	}
}

// TestBundle checks both forms of the attestation manifest and that the
// statements read back.
func TestBundle(t *testing.T) {
	subject := v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 500,
		Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("7", 64)}}
	subs, err := Subjects([]string{"127.0.0.1:5000/app:1"}, v1.Platform{OS: "linux", Architecture: "amd64"}, subject.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if subs[0].Name != "pkg:docker/127.0.0.1%3A5000/app@1?platform=linux%2Famd64" {
		t.Errorf("subject name %q", subs[0].Name)
	}
	st, err := NewStatement(PredicateSLSA1, subs, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	for _, referrer := range []bool{false, true} {
		b, err := NewBundle(subject, []*Statement{st}, referrer)
		if err != nil {
			t.Fatal(err)
		}
		var m v1.Manifest
		if err := json.Unmarshal(b.Manifest, &m); err != nil {
			t.Fatal(err)
		}
		if d := b.Descriptor; d.Platform.OS != "unknown" || d.Annotations[AnnotationReferenceType] != "attestation-manifest" ||
			d.Annotations[AnnotationReferenceDigest] != subject.Digest.String() {
			t.Errorf("descriptor = %+v", d)
		}
		if m.Layers[0].MediaType != MediaTypeInToto || m.Layers[0].Annotations[AnnotationPredType] != PredicateSLSA1 {
			t.Errorf("layer = %+v", m.Layers[0])
		}
		if referrer != (m.Subject != nil && m.Subject.Digest == subject.Digest && m.ArtifactType == ArtifactType && m.Config.MediaType == MediaTypeEmpty) {
			t.Errorf("referrer=%v: manifest %s", referrer, b.Manifest)
		}
		img, err := b.Image()
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := img.Digest(); d != b.Descriptor.Digest {
			t.Errorf("image digest %s, descriptor %s", d, b.Descriptor.Digest)
		}
		got, err := ReadStatements(b.Manifest, func(l v1.Descriptor) ([]byte, error) { return b.Blobs[l.Digest], nil })
		if err != nil || len(got) != 1 || string(got[0].Predicate) != `{"k":"v"}` || got[0].Type != StatementType {
			t.Errorf("read back %+v, %v", got, err)
		}
		// A blob that does not match its digest is refused.
		if _, err := ReadStatements(b.Manifest, func(v1.Descriptor) ([]byte, error) { return []byte(`{}`), nil }); err == nil {
			t.Error("a statement with the wrong digest was read")
		}
	}
	// A layer claiming more than MaxStatementSize is refused unread.
	huge := []byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.in-toto+json","size":` +
		strconv.Itoa(MaxStatementSize+1) + `,"digest":"sha256:` + strings.Repeat("8", 64) + `"}]}`)
	if _, err := ReadStatements(huge, func(v1.Descriptor) ([]byte, error) {
		t.Error("a statement larger than MaxStatementSize was read")
		return nil, nil
	}); err == nil {
		t.Error("a statement larger than MaxStatementSize was accepted")
	}
	if _, err := NewBundle(subject, nil, false); err == nil {
		t.Error("an empty bundle was made")
	}
}

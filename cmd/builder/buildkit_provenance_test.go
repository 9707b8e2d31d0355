package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"builder/build/buildtest"
)

// buildkitOnly are the fields of BuildKit's provenance that builder does
// not write, with why. Paths are dotted, array indexes written [].
var buildkitOnly = map[string]string{
	// BuildKit lists its LLB operations; builder runs no LLB and lists the
	// Dockerfile instructions under the same key (id, inputs, and name).
	"buildDefinition.internalParameters.buildConfig.llbDefinition[].op": "LLB operations: builder has none",
	// The LLB of the Dockerfile frontend's own source mapping.
	"runDetails.metadata.buildkit_metadata.source.infos[].llbDefinition": "LLB of the frontend: builder has none",
	"runDetails.metadata.buildkit_metadata.source.infos[].digestMapping": "LLB digests: builder has none",
	"buildDefinition.internalParameters.buildConfig.digestMapping":       "LLB digests: builder has none",
	// Builder never discloses a build arg whose name looks like a secret
	// (BuildKit's SecretsUsedInArgOrEnv rule); BuildKit records it.
	"buildDefinition.externalParameters.request.args.build-arg:GITHUB_TOKEN": "secret-like build arg: left out on purpose",
}

// buildkitValues are the fields whose values must match BuildKit's for the
// same Dockerfile, after ports and the base image are made the same.
var buildkitValues = []string{
	"buildDefinition.buildType",
	"buildDefinition.externalParameters.request.frontend",
	"buildDefinition.externalParameters.request.args",
	"buildDefinition.externalParameters.request.secrets",
	"buildDefinition.externalParameters.request.locals",
	"buildDefinition.internalParameters.builderPlatform",
	"buildDefinition.resolvedDependencies[].uri",
	"runDetails.builder.id",
	"runDetails.metadata.buildkit_completeness",
	"runDetails.metadata.buildkit_metadata.source.infos[].filename",
	"runDetails.metadata.buildkit_metadata.source.infos[].language",
	"runDetails.metadata.buildkit_metadata.source.infos[].data",
}

// TestBuildKitProvenance builds the Dockerfile of
// build/attest/testdata/buildkit with mode=max provenance and compares it
// field by field with the provenance buildkitd v0.26 wrote for it
// (provenance-max.json, made by regen.sh there; not run in CI): every
// field BuildKit writes is there, or listed in buildkitOnly with why, and
// the fields of buildkitValues are equal. Deliberate differences: builder
// leaves out secret-like build args (GITHUB_TOKEN), which BuildKit keeps,
// and records the Dockerfile's path in configSource (buildx passes it as
// filename; buildctl without --opt filename does not).
func TestBuildKitProvenance(t *testing.T) {
	buildtest.RequireRoot(t)
	dir := filepath.Join("..", "..", "build", "attest", "testdata", "buildkit")
	var captured struct {
		Registry, HTTP string
		Statement      struct {
			PredicateType string          `json:"predicateType"`
			Predicate     json.RawMessage `json:"predicate"`
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "provenance-max.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &captured); err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(attestDockerfile)
	if err != nil {
		t.Fatal(err)
	}

	reg := buildtest.Registry(t)
	base := reg + "/base:1"
	buildtest.Push(t, base, buildtest.BusyboxImage(t))
	port := buildtest.LoopbackServer(t, "attested file\n")
	http := "127.0.0.1:" + strconv.Itoa(port)
	ctxDir := writeCase(t, strings.ReplaceAll(string(df), "PORT", strconv.Itoa(port)), map[string]string{})
	t.Setenv("TOK", "secret-value")
	root := t.TempDir()
	out, code := cli(t, "--root", root, "build", "-t", "bk/prov:1", "--provenance", "mode=max",
		"--build-arg", "BASE="+base, "--build-arg", "VERSION=1.2.3", "--build-arg", "GITHUB_TOKEN=ghp-attest-token",
		"--secret", "id=tok,env=TOK", ctxDir)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, out)
	}
	ours, code := cli(t, "--root", root, "inspect", "--attestations", "-f", "{{json .Provenance}}", "bk/prov:1")
	if code != 0 {
		t.Fatalf("inspect --attestations: exit %d\n%s", code, ours)
	}
	// The same registry and server in both, and BuildKit's Dockerfile
	// with the port it was built with.
	same := func(s string) string {
		s = strings.NewReplacer(captured.Registry, "REGISTRY", strings.ReplaceAll(captured.Registry, ":", "%3A"), "REGISTRY",
			captured.HTTP, "HTTP").Replace(s)
		return strings.NewReplacer(reg, "REGISTRY", strings.ReplaceAll(reg, ":", "%3A"), "REGISTRY", http, "HTTP").Replace(s)
	}
	theirs := flatten(t, captured.Statement.Predicate)
	mine := flatten(t, json.RawMessage(ours))
	if captured.Statement.PredicateType != "https://slsa.dev/provenance/v1" {
		t.Fatalf("captured predicate type %s", captured.Statement.PredicateType)
	}
	for path := range theirs {
		if _, ok := mine[path]; ok || buildkitOnly[path] != "" || skipped(path) != "" {
			continue
		}
		t.Errorf("BuildKit writes %s; builder does not (add it, or list it in buildkitOnly with why)", path)
	}
	for _, path := range buildkitValues {
		want, got := fmt.Sprint(theirs[path]), fmt.Sprint(mine[path])
		switch path {
		case "buildDefinition.externalParameters.request.args":
			// Builder never discloses a secret-like arg; BuildKit does.
			var args map[string]string
			if err := json.Unmarshal([]byte(want), &args); err != nil {
				t.Fatal(err)
			}
			delete(args, "build-arg:GITHUB_TOKEN")
			want = compact(args)
		case "runDetails.metadata.buildkit_metadata.source.infos[].data":
			// The Dockerfile, with the ports of each run.
			want, got = decodeData(t, want), decodeData(t, got)
		}
		if want, got = same(want), same(got); want != got {
			t.Errorf("%s:\n BuildKit %s\n builder  %s", path, want, got)
		}
	}
}

// skipped says why a path below a listed one is not compared.
func skipped(path string) string {
	for p, why := range buildkitOnly {
		if strings.HasPrefix(path, p+".") || strings.HasPrefix(path, p+"[]") {
			return why
		}
	}
	// Step locations are keyed by step ids, which differ (LLB ops against
	// instructions); their shape is compared through a step builder has.
	if strings.HasPrefix(path, "runDetails.metadata.buildkit_metadata.source.locations.") {
		return "keyed by step id"
	}
	if strings.HasPrefix(path, "runDetails.metadata.buildkit_metadata.layers.") {
		return "keyed by step id"
	}
	return ""
}

// flatten maps every field path of a JSON document (array indexes as [],
// step ids as is) to its values: leaves as their JSON, objects as their
// JSON too, so a listed path compares whole.
func flatten(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	out := map[string]any{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if path != "" {
					p = path + "." + k
				}
				walk(p, x[k])
			}
		case []any:
			for _, e := range x {
				walk(path+"[]", e)
			}
		}
		if path != "" {
			if prev, ok := out[path]; ok {
				out[path] = fmt.Sprint(prev) + " " + compact(v)
			} else {
				out[path] = compact(v)
			}
		}
	}
	walk("", v)
	return out
}

// decodeData decodes a JSON string of base64.
func decodeData(t *testing.T, s string) string {
	t.Helper()
	var b []byte
	if err := json.Unmarshal([]byte(s), &b); err != nil {
		t.Fatalf("data %s: %v", s, err)
	}
	return string(b)
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

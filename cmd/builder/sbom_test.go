package main

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"builder/build/buildtest"
	"builder/internal/testenv"
)

// scanScript is the scanner image's entrypoint: BuildKit's SBOM scanner
// protocol around syft, as docker/buildkit-syft-scanner does it: syft's
// SPDX document, wrapped in an in-toto statement.
const scanScript = `set -e
out="$BUILDKIT_SCAN_DESTINATION/$(basename "$BUILDKIT_SCAN_SOURCE").spdx.json"
HOME=/tmp SYFT_CHECK_FOR_APP_UPDATE=false /bin/syft scan -q "dir:$BUILDKIT_SCAN_SOURCE" -o "spdx-json=/tmp/spdx.json"
{ printf '{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","predicate":'; cat /tmp/spdx.json; printf '}'; } > "$out"
`

// statement wraps a shell expression that prints an SPDX document in the
// in-toto statement a scanner writes.
func statement(doc string) string {
	return `{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","predicate":` + doc + `}`
}

// TestCLISBOM builds a scanner image from syft (built from the Go module
// proxy by .ci/run; BUILDER_TEST_SYFT names it) and a small entrypoint
// following BuildKit's scanner protocol, then builds with --sbom
// generator=that image: the SBOM of a Debian image lists its dpkg
// packages, the SBOM of an image holding a Go binary (builder itself)
// lists the binary's modules. Each is an in-toto SPDX statement of the
// stored image.
func TestCLISBOM(t *testing.T) {
	buildtest.RequireRoot(t)
	syft := os.Getenv("BUILDER_TEST_SYFT")
	if syft == "" {
		if testenv.Required() {
			t.Fatal("BUILDER_TEST_SYFT is not set (.ci/run builds syft from the Go module proxy)")
		}
		testenv.Skip(t, "BUILDER_TEST_SYFT is not set")
	}
	syftBin, err := os.ReadFile(syft)
	if err != nil {
		t.Fatal(err)
	}
	busybox, err := os.ReadFile(buildtest.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	scanner := writeCase(t, "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"+
		"COPY syft /bin/syft\nCOPY scan.sh /scan.sh\nENTRYPOINT [\"/bin/sh\", \"/scan.sh\"]\n",
		map[string]string{"busybox": string(busybox), "syft": string(syftBin), "scan.sh": scanScript})
	if out, code := cli(t, "--root", root, "build", "-q", "-t", "sbom/scanner:1", scanner); code != 0 {
		t.Fatalf("build the scanner: exit %d\n%s", code, out)
	}

	reg := buildtest.Registry(t)
	debian := reg + "/debian:bookworm"
	buildtest.Push(t, debian, buildtest.DebianImage(t))
	self, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dockerfile string
		files            map[string]string
		want             []string // package names the SBOM lists
	}{
		{"debian", "FROM " + debian + "\nRUN echo scanned > /scanned\n", map[string]string{}, []string{"dpkg", "base-files"}},
		{"go-binary", "FROM scratch\nCOPY builder /usr/local/bin/builder\n", map[string]string{"builder": string(self)},
			[]string{"github.com/google/go-containerregistry", "github.com/spf13/pflag"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := "sbom/" + tc.name + ":1"
			ctxDir := writeCase(t, tc.dockerfile, tc.files)
			if out, code := cli(t, "--root", root, "build", "-t", ref, "--sbom", "generator=sbom/scanner:1", ctxDir); code != 0 {
				t.Fatalf("build --sbom: exit %d\n%s", code, out)
			}
			out, code := cli(t, "--root", root, "inspect", "--attestations", ref)
			if code != 0 {
				t.Fatalf("inspect --attestations: exit %d\n%s", code, out)
			}
			var info struct {
				SBOM []struct {
					SPDXVersion string `json:"spdxVersion"`
					Packages    []struct{ Name string }
				}
				Statements []struct {
					PredicateType string `json:"predicateType"`
					Subject       []struct{ Name string }
				}
			}
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if len(info.SBOM) != 1 || !strings.HasPrefix(info.SBOM[0].SPDXVersion, "SPDX-") {
				t.Fatalf("SBOMs: %s", out)
			}
			if s := info.Statements[0]; s.PredicateType != "https://spdx.dev/Document" || !strings.Contains(s.Subject[0].Name, "sbom/"+tc.name+"@1") {
				t.Errorf("statement %+v", s)
			}
			names := map[string]bool{}
			for _, p := range info.SBOM[0].Packages {
				names[p.Name] = true
			}
			for _, w := range tc.want {
				if !names[w] {
					t.Errorf("the SBOM does not list %s (%d packages)", w, len(names))
				}
			}
		})
	}
	if m := buildtest.Mounts(t, root); len(m) > 0 {
		t.Errorf("mounts left: %q", m)
	}
}

// TestCLISBOMProtocol runs scanner images made of busybox scripts: the
// scanned filesystem is read-only and the scanner has no network; a
// scanner that writes no SBOM, or one that is not JSON, fails the build
// with one line naming the generator; files outside the output directory
// are not taken.
func TestCLISBOMProtocol(t *testing.T) {
	buildtest.RequireRoot(t)
	busybox, err := os.ReadFile(buildtest.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	port := buildtest.LoopbackServer(t, "reachable")
	scanner := func(name, script string) string {
		ref := "sbom/" + name + ":1"
		dir := writeCase(t, "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"+
			"COPY scan.sh /scan.sh\nENTRYPOINT [\"/bin/sh\", \"/scan.sh\"]\n",
			map[string]string{"busybox": string(busybox), "scan.sh": script})
		if out, code := cli(t, "--root", root, "build", "-q", "-t", ref, dir); code != 0 {
			t.Fatalf("build scanner %s: exit %d\n%s", name, code, out)
		}
		return ref
	}
	probe := scanner("probe", `n=$(basename "$BUILDKIT_SCAN_SOURCE")
if touch "$BUILDKIT_SCAN_SOURCE/x" 2>/dev/null; then ro=no; else ro=yes; fi
if wget -q -T 2 -O - http://127.0.0.1:`+strconv.Itoa(port)+`/ >/dev/null 2>&1; then net=yes; else net=no; fi
echo '`+statement(`{"decoy":true}`)+`' > /tmp/decoy.spdx.json
echo '`+statement(`{"spdxVersion":"SPDX-2.3","name":"'"$n"'","comment":"ro='"$ro"' net='"$net"' files='"$(ls $BUILDKIT_SCAN_SOURCE | tr '\n' ,)"'"}`)+`' > "$BUILDKIT_SCAN_DESTINATION/$n.spdx.json"
`)
	app := writeCase(t, "FROM scratch\nCOPY hello /hello\n", map[string]string{"hello": "hi"})
	if out, code := cli(t, "--root", root, "build", "-t", "sbom/app:1", "--sbom", "generator="+probe, app); code != 0 {
		t.Fatalf("build --sbom: exit %d\n%s", code, out)
	}
	out, code := cli(t, "--root", root, "inspect", "--attestations", "-f", "{{json .SBOM}}", "sbom/app:1")
	if code != 0 || !strings.Contains(out, `"comment":"ro=yes net=no files=hello,"`) || !strings.Contains(out, `"name":"sbom"`) ||
		strings.Contains(out, "decoy") || strings.Contains(out, "predicateType") || strings.Count(out, "spdxVersion") != 1 {
		t.Errorf("SBOM of the probe: exit %d\n%s", code, out)
	}
	// The extras, as BuildKit binds them read-only under
	// $BUILDKIT_SCAN_SOURCE_EXTRAS: the context (.dockerignore applied)
	// when BUILDKIT_SBOM_SCAN_CONTEXT asks (a global ARG or an ARG of the
	// target stage, which a build arg overrides; true or a list naming the
	// stage), the stages the target reads that BUILDKIT_SBOM_SCAN_STAGE
	// marks (never the target itself). A build arg for an ARG the
	// Dockerfile does not declare asks for nothing, as in BuildKit.
	extras := scanner("extras", `e="$BUILDKIT_SCAN_SOURCE_EXTRAS"
ro=yes
[ -n "$e" ] && for d in "$e"/*; do touch "$d/x" 2>/dev/null && ro=no; done
dirs=$([ -n "$e" ] && ls $e | tr '\n' ,)
ctx=$(ls $e/sbom-context 2>/dev/null | tr '\n' ,)
deps=$(ls $e/sbom-deps 2>/dev/null | tr '\n' ,)
echo '`+statement(`{"spdxVersion":"SPDX-2.3","name":"extras","comment":"extras='"$e"' dirs='"$dirs"' ro='"$ro"' ctx='"$ctx"' deps='"$deps"'"}`)+`' > "$BUILDKIT_SCAN_DESTINATION/extras.spdx.json"
`)
	const (
		plain    = "FROM scratch AS app\nCOPY hello /hello\n"
		stages   = "FROM scratch AS deps\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY hello /lib.txt\nFROM scratch AS unread\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY hello /u\nFROM scratch AS app\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY --from=deps /lib.txt /lib.txt\n"
		noneWant = `"comment":"extras= dirs= ro=yes ctx= deps="`
		ctxWant  = `"comment":"extras=/run/src/extras dirs=sbom-context, ro=yes ctx=Dockerfile,hello, deps="`
	)
	for _, tc := range []struct {
		name, dockerfile string
		args             []string
		want             string
	}{
		{"none", plain, nil, noneWant},
		{"context-build-arg-undeclared", plain, []string{"--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=true"}, noneWant},
		{"context-build-arg", "ARG BUILDKIT_SBOM_SCAN_CONTEXT\n" + plain, []string{"--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=true"}, ctxWant},
		{"context-stage-arg", "FROM scratch AS app\nARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nCOPY hello /hello\n", nil, ctxWant},
		{"context-stage-arg-off", "FROM scratch AS app\nARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nCOPY hello /hello\n",
			[]string{"--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=false"}, noneWant},
		{"context-list", "ARG BUILDKIT_SBOM_SCAN_CONTEXT\n" + plain, []string{"--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=other,app"}, ctxWant},
		{"context-other-stage", "ARG BUILDKIT_SBOM_SCAN_CONTEXT\n" + plain, []string{"--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=other"}, noneWant},
		{"stage-arg", stages, nil, `"comment":"extras=/run/src/extras dirs=sbom-deps, ro=yes ctx= deps=lib.txt,"`},
		{"stage-and-context", "ARG BUILDKIT_SBOM_SCAN_STAGE\nARG BUILDKIT_SBOM_SCAN_CONTEXT\nFROM scratch AS deps\nCOPY hello /lib.txt\nFROM scratch AS app\nCOPY --from=deps /lib.txt /lib.txt\n",
			[]string{"--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=deps", "--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=1"},
			`"comment":"extras=/run/src/extras dirs=sbom-context,sbom-deps, ro=yes ctx=Dockerfile,hello, deps=lib.txt,"`},
	} {
		t.Run("extras-"+tc.name, func(t *testing.T) {
			dir := writeCase(t, tc.dockerfile, map[string]string{"hello": "hi", "secret.txt": "no", ".dockerignore": "secret.txt\n"})
			args := append([]string{"--root", root, "build", "-t", "sbom/ctx:1", "--sbom", "generator=" + extras}, tc.args...)
			if out, code := cli(t, append(args, dir)...); code != 0 || strings.Contains(out, "not consumed") {
				t.Fatalf("build --sbom: exit %d\n%s", code, out)
			}
			out, code := cli(t, "--root", root, "inspect", "--attestations", "-f", "{{json .SBOM}}", "sbom/ctx:1")
			if code != 0 || !strings.Contains(out, tc.want) {
				t.Errorf("SBOM: exit %d, want %s\n%s", code, tc.want, out)
			}
		})
	}
	for _, tc := range []struct{ name, script, want string }{
		{"silent", "true\n", "wrote nothing in /run/out"},
		{"garbage", `echo 'not json' > "$BUILDKIT_SCAN_DESTINATION/sbom.spdx.json"` + "\n", "/run/out/sbom.spdx.json: decode in-toto statement"},
		{"bare-spdx", `echo '{"spdxVersion":"SPDX-2.3"}' > "$BUILDKIT_SCAN_DESTINATION/sbom.spdx.json"` + "\n", `predicate type ""`},
		{"two-statements", `echo '` + statement("{}") + statement("{}") + `' > "$BUILDKIT_SCAN_DESTINATION/sbom.spdx.json"` + "\n", "not a single in-toto statement"},
		{"subdir", `mkdir "$BUILDKIT_SCAN_DESTINATION/sub" && echo '` + statement("{}") + `' > "$BUILDKIT_SCAN_DESTINATION/sub/x.spdx.json"` + "\n", "wrote nothing in /run/out"},
		{"failing", "exit 3\n", "exit code: 3"},
		// Hostile output: symlinks to the image's or the sandbox's files,
		// the destination replaced by a symlink, a statement in a
		// subdirectory (none of them read), and too many statements.
		{"symlinks", `ln -s /etc/passwd "$BUILDKIT_SCAN_DESTINATION/passwd.spdx.json"
ln -s "$BUILDKIT_SCAN_SOURCE/hello" "$BUILDKIT_SCAN_DESTINATION/hello.spdx.json"
`, "wrote nothing in /run/out"},
		{"destination-symlink", `cd / && rm -rf "$BUILDKIT_SCAN_DESTINATION" && ln -s /tmp "$BUILDKIT_SCAN_DESTINATION" && echo '` + statement("{}") + `' > "$BUILDKIT_SCAN_DESTINATION/x.spdx.json"` + "\n", "wrote nothing in /run/out"},
		{"thousands", `i=0; while [ $i -le 1000 ]; do echo '` + statement("{}") + `' > "$BUILDKIT_SCAN_DESTINATION/$i.spdx.json"; i=$((i+1)); done` + "\n", "more than 1000 statements"},
	} {
		ref := scanner(tc.name, tc.script)
		out, code := cli(t, "--root", root, "build", "-t", "sbom/app:2", "--sbom", "generator="+ref, app)
		if code != 1 || !strings.Contains(out, "sbom generator "+ref) || !strings.Contains(out, tc.want) {
			t.Errorf("scanner %s: exit %d, want 1 naming the generator and %q:\n%s", tc.name, code, tc.want, out)
		}
	}
	if m := buildtest.Mounts(t, root); len(m) > 0 {
		t.Errorf("mounts left: %q", m)
	}
}

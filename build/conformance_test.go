package build

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"builder/build/buildtest"
	"builder/build/namedctx"
	"builder/build/progress"
	"builder/build/secrets"
	"builder/export"
)

// conformanceDir holds one directory per conformance case; its README.md
// documents the case.json schema.
const conformanceDir = "../testdata/conformance"

// conformanceMtime is the modification time every file of a case's context
// gets before the build, so that cases can expect preserved mtimes.
var conformanceMtime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// conformanceCase is one directory of testdata/conformance: a Dockerfile,
// an optional context/ and case.json.
type conformanceCase struct {
	Name string `json:"-"`
	// Base names another case that is built first, into the same store; its
	// image is then this case's BASE build arg (for ONBUILD).
	Base string `json:"base"`
	// Dockerfile is the Dockerfile's path relative to the case directory.
	Dockerfile string `json:"dockerfile"`
	// BuildArgs are --build-arg values; null means "--build-arg K" (the
	// value comes from the environment, which Env sets). In values,
	// {{base}} is the busybox reference, {{registry}} its registry host
	// and {{multi}} a linux/amd64+linux/arm64 index of busybox.
	BuildArgs map[string]*string `json:"buildArgs"`
	// Env is set in the process environment during the build; a case with
	// Env does not run in parallel.
	Env    map[string]string `json:"env"`
	Target string            `json:"target"`
	// Labels are --label values.
	Labels  map[string]string `json:"labels"`
	Network string            `json:"network"`
	// Allow are the entitlements granted (--allow).
	Allow []string `json:"allow"`
	// Platform is the build's target platform (--platform), "os/arch".
	Platform string `json:"platform"`
	// Platforms are the target platforms of a build of several.
	Platforms []string `json:"platforms"`
	// Secrets maps a secret id to {"file": path relative to the case
	// directory} or {"env": variable}.
	Secrets map[string]secrets.Source `json:"secrets"`
	// Contexts are --build-context values by name: a value without
	// "://" is a directory relative to the case directory; placeholders
	// are expanded.
	Contexts map[string]string `json:"contexts"`
	Expect   conformanceExpect `json:"expect"`
}

// conformanceExpect is what a case's build must produce.
type conformanceExpect struct {
	// Config holds the image config fields the image must have, compared
	// as JSON values; null means the field must be unset.
	Config   map[string]json.RawMessage `json:"config"`
	Author   *string                    `json:"author"`
	Platform string                     `json:"platform"` // os/arch of the image
	Files    map[string]fileExpect      `json:"files"`
	// History is the tail of the image history, in order.
	History []historyExpect `json:"history"`
	// Error, when set, is a substring the build's error must contain; " ... "
	// in it stands for any text.
	Error string `json:"error"`
	// Warning is a substring the build log must contain.
	Warning string `json:"warning"`
	// NoWarning is a substring the build log must not contain.
	NoWarning string `json:"noWarning"`
	// NotInImage are strings that appear nowhere in the config (history
	// included), the image's files, the build log or the step cache.
	NotInImage []string `json:"notInImage"`
	// Layers is the number of layers the image must have, 0 to not check.
	Layers int `json:"layers"`
	// CreatedNotBase asks for a config "created" time other than that of
	// the base case's image.
	CreatedNotBase bool `json:"createdNotBase"`
	// Images are, for a build of several platforms, the expectations of
	// each image of the index, in order; their platform is checked in the
	// index ("os/arch[/variant]") and in the config (os/arch).
	Images []conformanceExpect `json:"images"`
}

// fileExpect describes one path of the unpacked image.
type fileExpect struct {
	Content  *string `json:"content"`
	Mode     string  `json:"mode"` // octal permission bits, e.g. "0755"
	UID      *int    `json:"uid"`
	GID      *int    `json:"gid"`
	Link     *string `json:"link"`   // symlink target
	Absent   bool    `json:"absent"` // the path must not exist
	Type     string  `json:"type"`   // "file", "dir" or "symlink"
	Mtime    string  `json:"mtime"`  // RFC 3339
	SameAs   string  `json:"sameAs"` // a path that is a hard link to the same inode
	Contains string  `json:"contains"`
}

type historyExpect struct {
	CreatedBy  string `json:"createdBy"` // substring of created_by
	EmptyLayer bool   `json:"emptyLayer"`
}

// conformanceCases reads every case of testdata/conformance.
func conformanceCases(t testing.TB) []conformanceCase {
	t.Helper()
	ents, err := os.ReadDir(conformanceDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []conformanceCase
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		c, err := loadConformanceCase(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func loadConformanceCase(dir string) (conformanceCase, error) {
	c := conformanceCase{Name: dir}
	dt, err := os.ReadFile(filepath.Join(conformanceDir, dir, "case.json"))
	if err != nil {
		return c, fmt.Errorf("case %s: %w", dir, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(dt)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("case %s: case.json: %w", dir, err)
	}
	if c.Dockerfile == "" {
		c.Dockerfile = "Dockerfile"
	}
	return c, nil
}

// prepare copies the case into a temporary directory, gives its context
// files conformanceMtime, and returns the copy.
func (c conformanceCase) prepare(t testing.TB) string {
	t.Helper()
	dir := copyCase(t, filepath.Join("conformance", c.Name))
	ctx := filepath.Join(dir, "context")
	stamp := conformanceMtime.Format("200601021504.05")
	if out, err := exec.Command("find", ctx, "-exec", "touch", "-h", "-t", stamp, "{}", "+").CombinedOutput(); err != nil {
		t.Fatalf("touch context: %v: %s", err, out)
	}
	return dir
}

// options returns the build options of the case prepared in dir, building
// its base case into f's store first when it has one. Environment
// variables in Env must already be set (see run).
func (c conformanceCase) options(f *fixture, dir string) Options {
	f.t.Helper()
	o := Options{ContextDir: filepath.Join(dir, "context"), Dockerfile: filepath.Join(dir, c.Dockerfile),
		BuildArgs: map[string]string{"BASE": f.base}, Target: c.Target, Network: c.Network, Allow: c.Allow,
		Labels: c.Labels}
	if c.Base != "" {
		bc, err := loadConformanceCase(c.Base)
		if err != nil {
			f.t.Fatal(err)
		}
		bo := bc.options(f, bc.prepare(f.t))
		bo.Tags = []string{"conformance-" + c.Base}
		if _, err := buildFile(context.Background(), f.b, bo); err != nil {
			f.t.Fatalf("build base case %s: %v", c.Base, err)
		}
		o.BuildArgs["BASE"] = "conformance-" + c.Base
	}
	expand := c.placeholders(f)
	if c.Base != "" {
		inner, layout := expand, ""
		expand = func(s string) string {
			if strings.Contains(s, "{{layout}}") && layout == "" {
				layout = c.baseLayout(f, dir)
			}
			return strings.ReplaceAll(inner(s), "{{layout}}", layout)
		}
	}
	for k, v := range c.BuildArgs {
		if v == nil {
			if ev, ok := os.LookupEnv(k); ok { // as the CLI does for --build-arg K
				o.BuildArgs[k] = ev
			}
			continue
		}
		o.BuildArgs[k] = expand(*v)
	}
	if dt, err := os.ReadFile(o.Dockerfile); err == nil && strings.Contains(string(dt), "{{") {
		if err := os.WriteFile(o.Dockerfile, []byte(expand(string(dt))), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	if c.Platform != "" {
		p, err := v1.ParsePlatform(c.Platform)
		if err != nil {
			f.t.Fatal(err)
		}
		o.Platform = *p
	}
	for _, s := range c.Platforms {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			f.t.Fatal(err)
		}
		o.Platforms = append(o.Platforms, *p)
	}
	if len(c.Secrets) > 0 {
		o.Secrets = map[string]secrets.Source{}
		for id, s := range c.Secrets {
			if s.File != "" {
				s.File = filepath.Join(dir, s.File)
			}
			o.Secrets[id] = s
		}
	}
	for n, v := range c.Contexts {
		v = expand(v)
		if !strings.Contains(v, "://") {
			v = filepath.Join(dir, v)
		}
		nc, err := namedctx.Parse(n + "=" + v)
		if err != nil {
			f.t.Fatal(err)
		}
		if o.NamedContexts == nil {
			o.NamedContexts = map[string]namedctx.Context{}
		}
		o.NamedContexts[nc.Key] = nc
	}
	return o
}

// baseLayout writes the base case's image from f's store into an OCI
// layout directory under dir, as "-o type=oci,tar=false" writes it, and
// returns "DIR@sha256:…" (the layout pinned by the image's manifest
// digest) for the {{layout}} placeholder.
func (c conformanceCase) baseLayout(f *fixture, dir string) string {
	f.t.Helper()
	img := c.baseImage(f)
	d, err := img.Digest()
	if err != nil {
		f.t.Fatal(err)
	}
	lay := filepath.Join(dir, "base-layout")
	if err := export.WriteOCIDir(context.Background(), lay, img, "conformance-"+c.Base, nil); err != nil {
		f.t.Fatalf("write the base case's image as an OCI layout: %v", err)
	}
	return lay + "@" + d.String()
}

// baseImage returns the image of c's base case from f's store.
func (c conformanceCase) baseImage(f *fixture) v1.Image {
	f.t.Helper()
	desc, err := f.b.index.Lookup("conformance-" + c.Base)
	if err != nil {
		f.t.Fatalf("base case image: %v", err)
	}
	img, err := export.LoadImage(f.b.store, desc.Digest)
	if err != nil {
		f.t.Fatalf("base case image: %v", err)
	}
	return img
}

// placeholders returns the function that replaces the placeholders of
// build-arg values and Dockerfiles: {{base}} (the busybox reference),
// {{registry}} (its host:port), {{baseDigest}} (busybox pinned by its
// manifest digest, "host/busybox@sha256:…"), {{digest}} (that digest alone),
// {{baseRepo}} (the reference
// without tag) and {{multi}} (see pushMultiPlatform).
func (c conformanceCase) placeholders(f *fixture) func(string) string {
	host, _, _ := strings.Cut(f.base, "/")
	repo := f.base
	if i := strings.LastIndex(repo, ":"); i > len(host) {
		repo = repo[:i]
	}
	return func(s string) string {
		if strings.Contains(s, "{{baseDigest}}") || strings.Contains(s, "{{digest}}") {
			r, err := name.ParseReference(f.base, name.Insecure)
			if err != nil {
				f.t.Fatal(err)
			}
			desc, err := remote.Head(r)
			if err != nil {
				f.t.Fatalf("head %s: %v", f.base, err)
			}
			s = strings.ReplaceAll(s, "{{baseDigest}}", repo+"@"+desc.Digest.String())
			s = strings.ReplaceAll(s, "{{digest}}", desc.Digest.String())
		}
		if strings.Contains(s, "{{multi}}") {
			s = strings.ReplaceAll(s, "{{multi}}", pushMultiPlatform(f))
		}
		return strings.NewReplacer("{{base}}", f.base, "{{registry}}", host, "{{baseRepo}}", repo).Replace(s)
	}
}

// pushMultiPlatform pushes an index of busybox for linux/amd64 and
// linux/arm64 (the same layer, told apart by their configs) next to f's
// busybox and returns its reference.
func pushMultiPlatform(f *fixture) string {
	f.t.Helper()
	host, _, _ := strings.Cut(f.base, "/")
	ref := host + "/multi:latest"
	amd := buildtest.BusyboxImage(f.t)
	cf, err := amd.ConfigFile()
	if err != nil {
		f.t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = "arm64"
	cf.Config.Labels = map[string]string{"arch": "arm64"}
	arm, err := mutate.ConfigFile(amd, cf)
	if err != nil {
		f.t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		f.t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// TestConformance builds every case of testdata/conformance and checks the
// image against the case's expectations.
func TestConformance(t *testing.T) {
	buildtest.RequireRoot(t)
	for _, c := range conformanceCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			if len(c.Env) == 0 {
				t.Parallel()
			}
			for k, v := range c.Env {
				t.Setenv(k, v)
			}
			c.run(t)
		})
	}
}

// TestConformanceChroot builds the cases about the identity RUN has in
// chroot isolation too, where the sandbox sets it up without namespaces.
func TestConformanceChroot(t *testing.T) {
	buildtest.RequireRoot(t)
	for _, name := range []string{"user-groups", "user"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := loadConformanceCase(name)
			if err != nil {
				t.Fatal(err)
			}
			c.runWith(t, newFixtureWith(t, "naive"), func(o *Options) { o.Isolation = IsolationChroot })
		})
	}
}

// run builds the case in a fresh store and checks what it expects.
func (c conformanceCase) run(t *testing.T) { c.runWith(t, newFixture(t)) }

// runWith builds the case in f's store, with mods applied to its options,
// and checks what it expects.
func (c conformanceCase) runWith(t *testing.T, f *fixture, mods ...func(*Options)) {
	dir := c.prepare(t)
	var logBuf strings.Builder
	o := c.options(f, dir)
	for _, m := range mods {
		m(&o)
	}
	o.Progress = progress.New(&logBuf, progress.Plain)
	res, err := buildFile(context.Background(), f.b, o)
	log := logBuf.String()
	e := c.Expect
	if e.Error != "" {
		if err == nil {
			t.Fatalf("build succeeded, want an error containing %q\nlog:\n%s", e.Error, log)
		}
		if !containsInOrder(err.Error(), strings.Split(e.Error, " ... ")) {
			t.Errorf("error %q does not contain %q", err, e.Error)
		}
		if m := buildtest.Mounts(t, f.root); len(m) > 0 {
			t.Errorf("mounts left after a failed build: %q", m)
		}
		return
	}
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, log)
	}
	if e.Warning != "" && !strings.Contains(log, e.Warning) {
		t.Errorf("log lacks warning %q:\n%s", e.Warning, log)
	}
	if e.NoWarning != "" && strings.Contains(log, e.NoWarning) {
		t.Errorf("log has %q:\n%s", e.NoWarning, log)
	}
	for _, s := range e.NotInImage {
		if strings.Contains(log, s) {
			t.Errorf("build log contains %q", s)
		}
		forEachFile(t, filepath.Join(f.root, "cache"), func(p string, dt []byte) {
			if strings.Contains(string(dt), s) {
				t.Errorf("cache record %s contains %q", p, s)
			}
		})
	}
	if len(c.Platforms) == 0 {
		c.checkImage(t, f, res.Image, e)
		return
	}
	if len(res.Images) != len(e.Images) {
		t.Fatalf("%d images, want %d", len(res.Images), len(e.Images))
	}
	for i, pi := range res.Images {
		p := pi.Platform
		got := p.OS + "/" + p.Architecture
		if p.Variant != "" {
			got += "/" + p.Variant
		}
		if want := e.Images[i].Platform; got != want {
			t.Errorf("index manifest %d is for %s, want %s", i, got, want)
		}
		ie := e.Images[i]
		ie.Platform = strings.Join(strings.SplitN(ie.Platform, "/", 3)[:2], "/") // the config's os/arch
		c.checkImage(t, f, pi.Image, ie)
	}
}

// checkImage checks one image of the case's build against e.
func (c conformanceCase) checkImage(t *testing.T, f *fixture, img v1.Image, e conformanceExpect) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, e, cf, raw)
	if e.CreatedNotBase {
		bcf, err := c.baseImage(f).ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Created.Equal(bcf.Created.Time) {
			t.Errorf("created = %s, the base image's time", cf.Created.UTC().Format(time.RFC3339Nano))
		}
	}
	if len(e.Files) > 0 || len(e.NotInImage) > 0 {
		if cf.OS != "linux" {
			// umoci unpacks linux images only; the layers are the same.
			lc := cf.DeepCopy()
			lc.OS = "linux"
			if img, err = mutate.ConfigFile(img, lc); err != nil {
				t.Fatal(err)
			}
		}
		u := unpack(t, img)
		for _, s := range e.NotInImage {
			forEachFile(t, u.rootfs, func(p string, dt []byte) {
				if strings.Contains(string(dt), s) {
					t.Errorf("image file %s contains %q", strings.TrimPrefix(p, u.rootfs), s)
				}
			})
		}
		paths := make([]string, 0, len(e.Files))
		for p := range e.Files {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			checkFile(t, u.rootfs, p, e.Files[p])
		}
	}
}

// checkConfig compares the image config: the raw JSON for the fields of
// expect.config (v1.ConfigFile drops some, e.g. Healthcheck.StartInterval),
// the parsed config for the rest.
func checkConfig(t *testing.T, e conformanceExpect, cf *v1.ConfigFile, raw []byte) {
	t.Helper()
	var top struct {
		Config map[string]json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	have := top.Config
	keys := make([]string, 0, len(e.Config))
	for k := range e.Config {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var want, got any
		if err := json.Unmarshal(e.Config[k], &want); err != nil {
			t.Fatalf("expect.config.%s: %v", k, err)
		}
		if raw, ok := have[k]; ok {
			json.Unmarshal(raw, &got)
		}
		if !reflect.DeepEqual(want, got) {
			t.Errorf("config %s = %s, want %s", k, have[k], e.Config[k])
		}
	}
	if e.Author != nil && cf.Author != *e.Author {
		t.Errorf("author = %q, want %q", cf.Author, *e.Author)
	}
	if e.Platform != "" {
		if got := cf.OS + "/" + cf.Architecture; got != e.Platform {
			t.Errorf("platform = %s, want %s", got, e.Platform)
		}
	}
	if e.Layers != 0 && len(cf.RootFS.DiffIDs) != e.Layers {
		t.Errorf("%d layers, want %d", len(cf.RootFS.DiffIDs), e.Layers)
	}
	if n := len(e.History); n > 0 {
		h := cf.History
		if len(h) < n {
			t.Errorf("history has %d entries, want at least %d", len(h), n)
		} else {
			for i, w := range e.History {
				g := h[len(h)-n+i]
				if !strings.Contains(g.CreatedBy, w.CreatedBy) || g.EmptyLayer != w.EmptyLayer {
					t.Errorf("history[-%d] = %q (empty %v), want %q (empty %v)", n-i, g.CreatedBy, g.EmptyLayer, w.CreatedBy, w.EmptyLayer)
				}
			}
		}
	}
	for _, s := range e.NotInImage {
		if strings.Contains(string(raw), s) {
			t.Errorf("image config contains %q:\n%s", s, raw)
		}
	}
}

// forEachFile calls fn with the path and contents of every regular file
// under dir.
func forEachFile(t *testing.T, dir string, fn func(p string, dt []byte)) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		dt, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fn(p, dt)
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Errorf("walk %s: %v", dir, err)
	}
}

// containsInOrder reports whether s contains every part, one after another.
func containsInOrder(s string, parts []string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

func checkFile(t *testing.T, root, p string, w fileExpect) {
	t.Helper()
	full := filepath.Join(root, p)
	st, err := os.Lstat(full)
	if w.Absent {
		if err == nil {
			t.Errorf("%s exists, want absent", p)
		}
		return
	}
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	typ := "file"
	switch {
	case st.IsDir():
		typ = "dir"
	case st.Mode()&os.ModeSymlink != 0:
		typ = "symlink"
	case !st.Mode().IsRegular():
		typ = st.Mode().Type().String()
	}
	if w.Type != "" && w.Type != typ {
		t.Errorf("%s is a %s, want a %s", p, typ, w.Type)
	}
	if w.Content != nil || w.Contains != "" {
		dt, err := os.ReadFile(full)
		switch {
		case err != nil:
			t.Errorf("%s: %v", p, err)
		case w.Content != nil && string(dt) != *w.Content:
			t.Errorf("%s = %q, want %q", p, dt, *w.Content)
		case !strings.Contains(string(dt), w.Contains):
			t.Errorf("%s = %q, want it to contain %q", p, dt, w.Contains)
		}
	}
	if w.Mode != "" {
		want, err := strconv.ParseUint(w.Mode, 8, 32)
		if err != nil {
			t.Fatalf("%s: mode %q: %v", p, w.Mode, err)
		}
		got := uint64(st.Mode().Perm())
		if st.Mode()&os.ModeSetuid != 0 {
			got |= 0o4000
		}
		if st.Mode()&os.ModeSetgid != 0 {
			got |= 0o2000
		}
		if st.Mode()&os.ModeSticky != 0 {
			got |= 0o1000
		}
		if got != want {
			t.Errorf("%s has mode %04o, want %04o", p, got, want)
		}
	}
	sys := st.Sys().(*syscall.Stat_t)
	if w.UID != nil && int(sys.Uid) != *w.UID {
		t.Errorf("%s has uid %d, want %d", p, sys.Uid, *w.UID)
	}
	if w.GID != nil && int(sys.Gid) != *w.GID {
		t.Errorf("%s has gid %d, want %d", p, sys.Gid, *w.GID)
	}
	if w.Link != nil {
		if l, err := os.Readlink(full); err != nil || l != *w.Link {
			t.Errorf("%s links to %q (%v), want %q", p, l, err, *w.Link)
		}
	}
	if w.Mtime != "" {
		want, err := time.Parse(time.RFC3339, w.Mtime)
		if err != nil {
			t.Fatalf("%s: mtime %q: %v", p, w.Mtime, err)
		}
		if !st.ModTime().Equal(want) {
			t.Errorf("%s has mtime %s, want %s", p, st.ModTime().UTC().Format(time.RFC3339), w.Mtime)
		}
	}
	if w.SameAs != "" {
		other, err := os.Lstat(filepath.Join(root, w.SameAs))
		if err != nil || !os.SameFile(st, other) {
			t.Errorf("%s is not a hard link of %s (%v)", p, w.SameAs, err)
		}
	}
}

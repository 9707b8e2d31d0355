package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"builder/build"
	"builder/export"
)

// output is one -o/--output destination.
type output struct {
	Type  string
	Dest  string
	Attrs map[string]string
}

// parseOutput reads buildx's output syntax: "type=oci,dest=out.tar", or a
// bare path meaning type=local.
func parseOutput(s string) (output, error) {
	if !strings.Contains(s, "=") {
		return output{Type: "local", Dest: s}, nil
	}
	o := output{Attrs: map[string]string{}}
	for _, f := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return o, usagef("invalid output %q: %q is not KEY=VALUE", s, f)
		}
		switch strings.TrimSpace(k) {
		case "type":
			o.Type = v
		case "dest":
			o.Dest = v
		default:
			o.Attrs[k] = v
		}
	}
	switch o.Type {
	case "oci", "docker":
		if o.Dest == "" {
			return o, usagef("output type %s needs dest=FILE", o.Type)
		}
	case "image":
	case "":
		return o, usagef("invalid output %q: no type=", s)
	default:
		return o, usagef("output type %q is not supported (oci, docker, image)", o.Type)
	}
	return o, nil
}

func runBuild(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet("build", g)
	var (
		tags, buildArgs, outputs, insecure, labels         []string
		file, target, network, progress, iidfile, platform string
		noCache, pull, quiet                               bool
	)
	fs.StringArrayVarP(&tags, "tag", "t", nil, "name and optionally a tag (name:tag); may be repeated")
	fs.StringVarP(&file, "file", "f", "", "Dockerfile path (default CONTEXT/Dockerfile)")
	fs.StringArrayVar(&buildArgs, "build-arg", nil, "set a build-time variable (KEY=VALUE, or KEY to take it from the environment)")
	fs.StringArrayVar(&labels, "label", nil, "set a label on the image (KEY=VALUE)")
	fs.StringVar(&target, "target", "", "build this stage and the stages it needs")
	fs.BoolVar(&noCache, "no-cache", false, "do not use the cache")
	fs.BoolVar(&pull, "pull", false, "resolve base images in their registry even if stored locally")
	fs.StringVar(&network, "network", "host", "network mode of RUN: host or none")
	fs.StringVar(&platform, "platform", "", "target platform (only the host's, linux/"+hostArch()+", is supported)")
	fs.StringArrayVarP(&outputs, "output", "o", nil, "output: type=oci|docker,dest=FILE or type=image")
	fs.StringArrayVar(&insecure, "insecure-registry", nil, "allow plain HTTP to this registry host[:port]")
	var secrets, allow []string
	fs.StringArrayVar(&secrets, "secret", nil, "secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR")
	fs.StringArrayVar(&allow, "allow", nil, "extra privilege to allow: security.insecure (for RUN --security=insecure)")
	fs.StringVar(&progress, "progress", "auto", "progress output: auto, plain or quiet")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only the image ID")
	fs.StringVar(&iidfile, "iidfile", "", "write the image ID (manifest digest) to this file")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: builder build [OPTIONS] CONTEXT\n\nExamples:\n  builder build -t app .\n  builder build -t app -o type=oci,dest=app.tar .\n\nOptions:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if err.Error() == "pflag: help requested" {
			return nil
		}
		return usagef("%v", err)
	}
	if fs.NArg() != 1 {
		return usagef("builder build needs exactly one CONTEXT argument (see 'builder build --help')")
	}
	o := build.Options{ContextDir: fs.Arg(0), Tags: tags, Target: target, NoCache: noCache, Pull: pull,
		Network: network, Insecure: insecure, BuildArgs: map[string]string{}, Labels: map[string]string{}}
	if file != "" {
		o.Dockerfile = file
	}
	if st, err := os.Stat(o.ContextDir); err != nil || !st.IsDir() {
		return usagef("build context %q is not a directory", o.ContextDir)
	}
	for _, a := range buildArgs {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			var set bool
			if v, set = os.LookupEnv(k); !set {
				continue
			}
		}
		o.BuildArgs[k] = v
	}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		o.Labels[k] = v
	}
	if platform != "" && platform != "linux/"+hostArch() {
		return usagef("--platform %s: only linux/%s can be built on this machine", platform, hostArch())
	}
	if network != "host" && network != "none" && network != "default" {
		return usagef("--network %q: use host or none", network)
	}
	epoch, err := sourceDateEpoch(o.BuildArgs)
	if err != nil {
		return usagef("%v", err)
	}
	o.Epoch = epoch
	if err := secretOptions(&o, secrets, allow); err != nil {
		return err
	}
	var outs []output
	for _, s := range outputs {
		out, err := parseOutput(s)
		if err != nil {
			return err
		}
		outs = append(outs, out)
	}
	switch {
	case quiet || progress == "quiet":
		o.Progress = build.NewProgress(os.Stderr, true)
	case progress == "auto" || progress == "plain" || progress == "tty":
		o.Progress = build.NewProgress(os.Stderr, false)
	default:
		return usagef("--progress %q: use auto, plain or quiet", progress)
	}
	b, err := g.open()
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := b.Build(ctx, o)
	if err != nil {
		return err
	}
	for _, out := range outs {
		if err := writeOutput(ctx, out, res); err != nil {
			return err
		}
		if out.Dest != "" {
			o.Progress.Printf("exported %s image to %s", out.Type, out.Dest)
		}
	}
	if iidfile != "" {
		if err := os.WriteFile(iidfile, []byte(res.ManifestDigest.String()), 0o644); err != nil {
			return fmt.Errorf("write iidfile: %w", err)
		}
	}
	o.Progress.Printf("image %s", res.ManifestDigest)
	for _, t := range res.Tags {
		o.Progress.Printf("naming to %s", t)
	}
	o.Progress.Printf("%d steps, %d cached, %.2fs", res.Steps, res.Cached, time.Since(start).Seconds())
	if quiet {
		fmt.Println(res.ManifestDigest)
	}
	return nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH from a build arg or the environment.
func sourceDateEpoch(args map[string]string) (*time.Time, error) {
	v, ok := args["SOURCE_DATE_EPOCH"]
	if !ok {
		v, ok = os.LookupEnv("SOURCE_DATE_EPOCH")
	}
	if !ok || v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds", v)
	}
	t := time.Unix(n, 0).UTC()
	return &t, nil
}

// writeOutput writes the image to one destination. Files are written to a
// temporary name and renamed, so a failed export leaves no partial file.
func writeOutput(ctx context.Context, out output, res *build.Result) error {
	if out.Type == "image" {
		return nil
	}
	dest, err := filepath.Abs(out.Dest)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".builder-out-*")
	if err != nil {
		return fmt.Errorf("export %s: %w", out.Type, err)
	}
	defer os.Remove(tmp.Name())
	refName := "latest"
	if len(res.Tags) > 0 {
		refName = res.Tags[0]
	}
	switch out.Type {
	case "oci":
		err = export.WriteOCIArchive(ctx, tmp, res.Image, refName)
	case "docker":
		err = export.WriteDockerArchive(ctx, tmp, res.Image, res.Tags)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dest)
	}
	if err != nil {
		return fmt.Errorf("export %s to %s: %w", out.Type, out.Dest, err)
	}
	return nil
}

func hostArch() string { return runtime.GOARCH }

// secretOptions puts the --secret and --allow values into o.
func secretOptions(o *build.Options, secrets, allow []string) error {
	for _, s := range secrets {
		id, sec, err := build.ParseSecret(s)
		if err != nil {
			return usagef("--secret: %v", err)
		}
		if o.Secrets == nil {
			o.Secrets = map[string]build.Secret{}
		}
		o.Secrets[id] = sec
	}
	for _, a := range allow {
		if a != "security.insecure" {
			return usagef("--allow %q: only security.insecure is supported", a)
		}
		o.AllowInsecure = true
	}
	return nil
}

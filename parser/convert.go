package parser

import (
	"fmt"
	"slices"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
)

// convertCommand turns one BuildKit command parsed from node n into an Op.
// Slices are copied so the Op shares nothing with BuildKit's structures.
func convertCommand(c instructions.Command, n *bkparser.Node) (Op, error) {
	switch c := c.(type) {
	case *instructions.RunCommand:
		return convertRun(c, n)
	case *instructions.CopyCommand:
		return &Copy{
			Sources:  slices.Clone(c.SourcePaths),
			Dest:     c.DestPath,
			From:     c.From,
			Chown:    c.Chown,
			Chmod:    c.Chmod,
			Link:     c.Link,
			Excludes: slices.Clone(c.ExcludePatterns),
			Parents:  c.Parents,
			Heredocs: copyHeredocs(c.SourceContents, n.Heredocs),
		}, nil
	case *instructions.AddCommand:
		op := &Copy{
			Add:      true,
			Sources:  slices.Clone(c.SourcePaths),
			Dest:     c.DestPath,
			Chown:    c.Chown,
			Chmod:    c.Chmod,
			Link:     c.Link,
			Excludes: slices.Clone(c.ExcludePatterns),
			Checksum: c.Checksum,
			Heredocs: copyHeredocs(c.SourceContents, n.Heredocs),
		}
		if c.KeepGitDir != nil {
			op.KeepGitDir = *c.KeepGitDir
		}
		if c.Unpack != nil {
			u := *c.Unpack
			op.Unpack = &u
		}
		return op, nil
	case *instructions.EnvCommand:
		return &Env{Pairs: convertPairs(c.Env)}, nil
	case *instructions.LabelCommand:
		return &Label{Pairs: convertPairs(c.Labels)}, nil
	case *instructions.ArgCommand:
		op := &Arg{}
		for _, a := range c.Args {
			pair := ArgPair{Key: a.Key, Description: a.DocComment}
			if a.Value != nil {
				v := *a.Value
				pair.Value = &v
			}
			op.Pairs = append(op.Pairs, pair)
		}
		return op, nil
	case *instructions.ExposeCommand:
		return &Expose{Ports: slices.Clone(c.Ports)}, nil
	case *instructions.VolumeCommand:
		return &Volume{Paths: slices.Clone(c.Volumes)}, nil
	case *instructions.UserCommand:
		return &User{User: c.User}, nil
	case *instructions.WorkdirCommand:
		return &Workdir{Path: c.Path}, nil
	case *instructions.ShellCommand:
		return &Shell{Shell: slices.Clone(c.Shell)}, nil
	case *instructions.CmdCommand:
		return &Cmd{Command: slices.Clone(c.CmdLine), PrependShell: c.PrependShell}, nil
	case *instructions.EntrypointCommand:
		return &Entrypoint{Command: slices.Clone(c.CmdLine), PrependShell: c.PrependShell}, nil
	case *instructions.HealthCheckCommand:
		h := c.Health
		return &Healthcheck{
			Test:          slices.Clone(h.Test),
			Interval:      h.Interval,
			Timeout:       h.Timeout,
			StartPeriod:   h.StartPeriod,
			StartInterval: h.StartInterval,
			Retries:       h.Retries,
		}, nil
	case *instructions.StopSignalCommand:
		return &StopSignal{Signal: c.Signal}, nil
	case *instructions.OnbuildCommand:
		return &Onbuild{Expression: c.Expression}, nil
	case *instructions.MaintainerCommand:
		return &Maintainer{Name: c.Maintainer}, nil
	default:
		return nil, fmt.Errorf("unsupported instruction %s", c.Name())
	}
}

// convertRun converts RUN, re-reading the raw --mount values from the node's
// flags since BuildKit only keeps them unexported.
func convertRun(c *instructions.RunCommand, n *bkparser.Node) (*Run, error) {
	op := &Run{
		Command:      slices.Clone(c.CmdLine),
		PrependShell: c.PrependShell,
		Network:      instructions.GetNetwork(c),
		Security:     instructions.GetSecurity(c),
		Heredocs:     convertHeredocs(n.Heredocs),
	}
	for _, d := range instructions.GetDevices(c) {
		op.Devices = append(op.Devices, &RunDevice{Name: d.Name, Required: d.Required})
	}
	specs, err := runMountSpecs(n.Flags)
	if err != nil {
		return nil, err
	}
	op.Mounts, err = parseMounts(specs)
	if err != nil {
		return nil, err
	}
	return op, nil
}

// runMountSpecs returns the --mount values among a RUN node's flags, in
// order. It declares the same flags as BuildKit's RUN so that the flags
// BuildKit already accepted parse the same way.
func runMountSpecs(flags []string) ([]string, error) {
	bf := instructions.NewBFlagsWithArgs(flags)
	mount := bf.AddStrings("mount")
	bf.AddString("network", instructions.NetworkDefault)
	bf.AddString("security", instructions.SecuritySandbox)
	bf.AddStrings("device")
	if err := bf.Parse(); err != nil {
		return nil, err
	}
	return slices.Clone(mount.StringValues), nil
}

// convertHeredocs copies BuildKit heredocs.
func convertHeredocs(hs []bkparser.Heredoc) []Heredoc {
	var out []Heredoc
	for _, h := range hs {
		out = append(out, Heredoc{Name: h.Name, Content: h.Content, Expand: h.Expand, Chomp: h.Chomp})
	}
	return out
}

// copyHeredocs builds the inline sources of COPY/ADD: BuildKit's
// SourceContents give the order and expansion; the node's heredocs give the
// body as written and the <<- flag. A source naming a heredoc that has no
// body (JSON form) gets empty content, as in BuildKit.
func copyHeredocs(contents []instructions.SourceContent, hs []bkparser.Heredoc) []Heredoc {
	var out []Heredoc
	for _, sc := range contents {
		h := Heredoc{Name: sc.Path, Expand: sc.Expand}
		for _, nh := range hs {
			if nh.Name == sc.Path {
				// Later heredocs of the same name win, as in BuildKit's lookup.
				h.Content = nh.Content
				h.Chomp = nh.Chomp
			}
		}
		out = append(out, h)
	}
	return out
}

// convertPairs copies ENV/LABEL pairs.
func convertPairs(kvs instructions.KeyValuePairs) []KeyValue {
	out := make([]KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, KeyValue{Key: kv.Key, Value: kv.Value, Legacy: kv.NoDelim})
	}
	return out
}

package build

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"builder/build/gitsrc"
	"builder/build/namedctx"
	"builder/build/sshagent"
	"builder/imageref"
	"builder/parser"
)

// preflight checks, before any step runs, everything about the build that
// can be known without running it, so that a build bound to fail does so
// in a second rather than after its slow steps: the -t names, the
// --build-context sources, and in every stage the target needs, each
// RUN's entitlements and mounts (a required secret or ssh id that was not
// given, a --mount that does not parse) and the git binary for ADD of a
// git repository. Values that hold a variable are left to the step, which
// knows the variable's value. Errors name the Dockerfile line.
func (j *job) preflight(needed []int) error {
	for _, t := range j.o.Tags {
		if _, err := imageref.Normalize(t); err != nil {
			return fmt.Errorf("invalid tag %q: %w", t, err)
		}
	}
	for _, c := range j.o.NamedContexts {
		if c.Kind == namedctx.Git {
			if _, err := gitsrc.LookGit(); err != nil {
				return fmt.Errorf("--build-context %s: %w", c.Name, err)
			}
		}
	}
	for _, i := range needed {
		s := j.g.Stages[i]
		if _, ok := j.named(s.Name); ok && s.Name != "" {
			continue // replaced: its steps do not run
		}
		for _, step := range s.Steps {
			if err := j.preflightStep(step); err != nil {
				return newStepError(step.Pos, step.Original, err)
			}
		}
	}
	return nil
}

// preflightStep checks one step of a needed stage.
func (j *job) preflightStep(step *parser.Step) error {
	switch op := step.Op.(type) {
	case *parser.Run:
		if err := j.checkEntitlements(op); err != nil {
			return err
		}
		for _, raw := range op.Mounts {
			if strings.Contains(raw.Spec, "$") {
				continue
			}
			m, err := parser.ParseMount(raw.Spec, nil)
			if err != nil {
				return fmt.Errorf("parse --mount=%s: %w", raw.Spec, err)
			}
			switch m.Type {
			case "secret":
				id := secretMountID(m)
				if _, ok := j.o.Secrets[id]; !ok && m.Required && id != "" {
					return missingSecret(id)
				}
			case "ssh":
				id := sshMountID(m)
				if _, ok := j.o.SSH[id]; !ok && m.Required {
					return missingSSH(id)
				}
			}
		}
	case *parser.Copy:
		if !op.Add {
			return nil
		}
		for _, src := range op.Sources {
			if gitsrc.IsGit(src) {
				if _, err := gitsrc.LookGit(); err != nil {
					return fmt.Errorf("ADD %s: %w", gitsrc.Redact(src), err)
				}
			}
		}
	}
	return nil
}

// checkEntitlements checks that --allow granted what a RUN asks for.
func (j *job) checkEntitlements(op *parser.Run) error {
	if op.Security == "insecure" && !j.allowed(EntitlementSecurityInsecure) {
		return fmt.Errorf("RUN --security=insecure needs the %s entitlement: add --allow %[1]s", EntitlementSecurityInsecure)
	}
	if op.Network == NetworkHost && j.o.Network != NetworkHost && !j.allowed(EntitlementNetworkHost) {
		return fmt.Errorf("RUN --network=host needs the %s entitlement: add --allow %[1]s (the build's network is %q)",
			EntitlementNetworkHost, j.o.Network)
	}
	return nil
}

// secretMountID is the secret a secret mount reads: source=, else id=,
// else its target's base name.
func secretMountID(m *parser.RunMount) string {
	switch {
	case m.Source != "":
		return m.Source
	case m.ID != "":
		return m.ID
	case m.Target != "":
		return path.Base(path.Clean(m.Target))
	}
	return ""
}

// sshMountID is the agent an ssh mount forwards: id=, else "default".
func sshMountID(m *parser.RunMount) string {
	if m.ID == "" {
		return sshagent.DefaultID
	}
	return m.ID
}

// errSecretNotFound is the cause of a required secret that was not given.
var errSecretNotFound = errors.New("not found")

// missingSecret is the error of a required secret mount whose id no
// --secret gave.
func missingSecret(id string) error {
	return fmt.Errorf("secret %s: %w: add --secret id=%[1]s,src=PATH (or env=VAR)", id, errSecretNotFound)
}

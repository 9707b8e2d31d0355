package build

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"builder/build/sandbox"
	"builder/build/sandbox/nat"
	"builder/parser"
)

// Values of Options.Network and of RUN --network, as in buildx.
const (
	// NetworkDefault gives each RUN a private network namespace whose
	// outbound traffic goes through a userspace NAT (pasta or slirp4netns)
	// and cannot reach the host's loopback; without either tool, the host
	// network with a warning.
	NetworkDefault = "default"
	// NetworkNone gives each RUN a network namespace with only lo.
	NetworkNone = "none"
	// NetworkHost shares the host's network, loopback services included.
	// In RUN --network=host it needs the network.host entitlement: --allow
	// network.host, or --network host on the command line.
	NetworkHost = "host"
)

// The entitlements of Options.Allow (--allow), as BuildKit names them.
const (
	EntitlementNetworkHost      = "network.host"
	EntitlementSecurityInsecure = "security.insecure"
)

// runNetwork is how a build's default network is provided, decided once per
// build by setupNetwork, when the first RUN uses it.
type runNetwork struct {
	// nat is the NAT of the private default network; nil means the host
	// network stands in for it.
	nat *nat.NAT
}

// setupNetwork finds the NAT of the default network, once per build, when
// a RUN that uses it has to run. Without pasta or slirp4netns, or where
// network namespaces are refused (chroot isolation in a restricted
// container), it warns once and the default network is the host's.
func (j *job) setupNetwork(ctx context.Context) error {
	j.net = &runNetwork{}
	n, err := nat.Find(j.o.NAT)
	if err != nil {
		if j.o.NAT != "" || !errors.Is(err, nat.ErrUnavailable) {
			return fmt.Errorf("--network default: %w", err)
		}
		j.progress.Printf("WARNING: RUN uses the host network (its loopback services included): %v", err)
		return nil
	}
	iso, err := j.isolation(ctx)
	if err != nil {
		return err
	}
	if iso.mode == IsolationChroot {
		if err := sandbox.ProbeNetNS(); err != nil {
			j.progress.Printf("WARNING: RUN uses the host network (its loopback services included): %v", err)
			return nil
		}
	}
	j.net.nat = &n
	return nil
}

// runNetworkMode resolves a RUN's --network against the build's: "" and
// "default" take the build's mode. "host" needs the network.host
// entitlement unless the build's mode is host already. It returns the mode
// for the cache key; sandboxNetwork gives the sandbox's network and NAT
// once the step has to run.
func (j *job) runNetworkMode(op *parser.Run) (mode string, err error) {
	mode = op.Network
	if mode == "" || mode == NetworkDefault {
		mode = j.o.Network
	}
	switch mode {
	case NetworkHost:
		if err := j.checkEntitlements(op); err != nil {
			return "", err
		}
		return mode, nil
	case NetworkNone, NetworkDefault:
		return mode, nil
	}
	return "", fmt.Errorf("network mode %q: %w", mode, errNotSupported)
}

// sandboxNetwork returns the sandbox's network and NAT for a RUN of
// network mode (runNetworkMode's), setting the default network up on its
// first use (setupNetwork).
func (j *job) sandboxNetwork(ctx context.Context, mode string) (network string, n nat.NAT, err error) {
	switch mode {
	case NetworkHost:
		return "host", n, nil
	case NetworkNone:
		return "none", n, nil
	}
	j.netOnce.Do(func() { j.netErr = j.setupNetwork(ctx) })
	if j.netErr != nil {
		return "", n, j.netErr
	}
	if j.net.nat == nil {
		return "host", n, nil
	}
	return "private", *j.net.nat, nil
}

// allowed reports whether --allow granted the entitlement.
func (j *job) allowed(entitlement string) bool {
	return slices.Contains(j.o.Allow, entitlement)
}

// ParseAllow checks --allow values, each a comma-separated list of
// entitlements, and returns the entitlements.
func ParseAllow(values []string) ([]string, error) {
	var out []string
	for _, v := range values {
		for _, e := range strings.Split(v, ",") {
			switch e = strings.TrimSpace(e); e {
			case "":
			case EntitlementNetworkHost, EntitlementSecurityInsecure:
				out = append(out, e)
			default:
				return nil, fmt.Errorf("--allow %q: use %s or %s", e, EntitlementNetworkHost, EntitlementSecurityInsecure)
			}
		}
	}
	return out, nil
}

package build

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	units "github.com/docker/go-units"

	"builder/build/cache"
	"builder/build/sandbox"
)

// HostGateway is the --add-host address that stands for the host itself,
// as in buildx. Only RUNs on the host's network can reach the host, at
// 127.0.0.1; the default network cannot reach it by design.
const HostGateway = "host-gateway"

// ParseAddHost reads an --add-host value, HOST:IP or HOST=IP as buildx
// accepts them (an IPv6 address may follow the first colon, and may be in
// brackets). HOST may not contain whitespace or "#"; IP must be an address,
// or HostGateway, which resolves to 127.0.0.1 with --network host and is
// refused on the other networks.
func ParseAddHost(s, network string) (sandbox.HostEntry, error) {
	i := strings.IndexAny(s, "=:")
	if i <= 0 {
		return sandbox.HostEntry{}, fmt.Errorf("--add-host %q: want HOST:IP", s)
	}
	host, ip := s[:i], strings.TrimSuffix(strings.TrimPrefix(s[i+1:], "["), "]")
	if strings.ContainsAny(host, " \t\r\n#/\\") || len(host) > 253 {
		return sandbox.HostEntry{}, fmt.Errorf("--add-host %q: invalid host name %q", s, host)
	}
	if ip == HostGateway {
		if network != NetworkHost {
			return sandbox.HostEntry{}, fmt.Errorf("--add-host %s:%s needs --network host: the default network cannot reach the host", host, HostGateway)
		}
		return sandbox.HostEntry{Host: host, IP: "127.0.0.1"}, nil
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return sandbox.HostEntry{}, fmt.Errorf("--add-host %q: invalid IP address %q", s, ip)
	}
	return sandbox.HostEntry{Host: host, IP: addr.String()}, nil
}

// addRunOptions puts the build-wide RUN settings that change what a command
// sees (--add-host, --ulimit, --shm-size) into a RUN's cache key, each only
// when set, so that keys of builds without them stay as they were.
func (j *job) addRunOptions(p *cache.Preimage) {
	if len(j.o.ExtraHosts) > 0 {
		var b strings.Builder
		for _, h := range j.o.ExtraHosts {
			fmt.Fprintf(&b, "%s %s\n", h.Host, h.IP)
		}
		p.State["extraHosts"] = b.String()
	}
	if len(j.o.Ulimits) > 0 {
		var b strings.Builder
		for _, l := range j.o.Ulimits {
			fmt.Fprintf(&b, "%d %d %d\n", l.Resource, l.Soft, l.Hard)
		}
		p.State["ulimits"] = b.String()
	}
	if j.o.ShmSize != 0 {
		p.State["shmSize"] = strconv.FormatInt(j.o.ShmSize, 10)
	}
}

// noCacheStage reports whether --no-cache-filter names stage i, by name or
// by index.
func (j *job) noCacheStage(i int) bool {
	if len(j.o.NoCacheFilter) == 0 {
		return false
	}
	name := j.g.Stages[i].Name
	return slices.ContainsFunc(j.o.NoCacheFilter, func(f string) bool {
		return (name != "" && strings.EqualFold(f, name)) || f == strconv.Itoa(i)
	})
}

// checkNoCacheFilter reports a --no-cache-filter that names no stage.
func checkNoCacheFilter(o Options, stages []string) error {
	for _, f := range o.NoCacheFilter {
		if !slices.ContainsFunc(stages, func(s string) bool { return strings.EqualFold(s, f) }) {
			return fmt.Errorf("--no-cache-filter %q names no stage; stages: %s", f, strings.Join(stages, ", "))
		}
	}
	return nil
}

// ParseUlimit reads a --ulimit value, NAME=SOFT[:HARD] as Docker reads it
// (go-units' names: nofile, nproc, core, stack, memlock, ...; -1 is
// unlimited; HARD defaults to SOFT).
func ParseUlimit(s string) (sandbox.Rlimit, error) {
	u, err := units.ParseUlimit(s)
	if err != nil {
		return sandbox.Rlimit{}, fmt.Errorf("--ulimit %q: %w", s, err)
	}
	if u.Soft < -1 || u.Hard < -1 {
		return sandbox.Rlimit{}, fmt.Errorf("--ulimit %q: limits are -1 (unlimited) or at least 0", s)
	}
	r, err := u.GetRlimit()
	if err != nil {
		return sandbox.Rlimit{}, fmt.Errorf("--ulimit %q: %w", s, err)
	}
	return sandbox.Rlimit{Name: u.Name, Resource: r.Type, Soft: r.Soft, Hard: r.Hard}, nil
}

// ParseShmSize reads a --shm-size value, a size such as 64m or 1g
// (go-units' RAMInBytes); it must be positive.
func ParseShmSize(s string) (int64, error) {
	n, err := units.RAMInBytes(strings.TrimSpace(s))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("--shm-size %q: want a positive size such as 64m or 1g", s)
	}
	return n, nil
}

#!/bin/bash
# Regenerates provenance-max.json: the SLSA v1 provenance BuildKit writes
# (attest:provenance=mode=max,version=v1) for ./Dockerfile, which TestBuildKitProvenance
# compares builder's against field by field. Not run in CI (it needs
# buildkitd and buildctl, e.g. from /work/tools/bin, and root).
#
#   build/attest/testdata/buildkit/regen.sh [BUILDKIT_BIN_DIR]
#
# It starts, all on loopback and all stopped (by PID) on exit: a
# docker-registry holding a busybox base image that builder builds and
# pushes, a busybox httpd serving file.txt for the ADD, and buildkitd (runc
# worker, host network, its own root and socket). Ports differ per run; the
# test replaces them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../../.." && pwd)
bin=${1:-/work/tools/bin}
tmp=$(mktemp -d /tmp/builder-bk-prov.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  # buildkitd leaves its root's mounts behind when killed mid-build.
  grep " $tmp/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

reg_port=$(port)
cat > "$tmp/registry.yml" <<CFG
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $tmp/registry}}
http: {addr: 127.0.0.1:$reg_port}
CFG
/usr/bin/docker-registry serve "$tmp/registry.yml" > "$tmp/registry.log" 2>&1 &
pids+=($!)

http_port=$(port)
mkdir -p "$tmp/www" && printf 'attested file\n' > "$tmp/www/file.txt"
busybox httpd -f -p "127.0.0.1:$http_port" -h "$tmp/www" &
pids+=($!)

(cd "$repo" && CGO_ENABLED=0 go build -o "$tmp/builder" ./cmd/builder)
mkdir -p "$tmp/base" && cp /bin/busybox "$tmp/base/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' > "$tmp/base/Dockerfile"
sleep 1
base=127.0.0.1:$reg_port/base:1
"$tmp/builder" --root "$tmp/builder-root" build -q --provenance=false -t "$base" --push "$tmp/base" > /dev/null

cat > "$tmp/buildkitd.toml" <<CFG
[registry."127.0.0.1:$reg_port"]
  http = true
  insecure = true
CFG
"$bin/buildkitd" --root "$tmp/bk-root" --addr "unix://$tmp/bk.sock" --config "$tmp/buildkitd.toml" \
  --oci-worker=true --containerd-worker=false --oci-worker-net=host > "$tmp/buildkitd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$tmp/bk.sock" ] && break; sleep 0.2; done

mkdir -p "$tmp/ctx" && sed "s/PORT/$http_port/" "$here/Dockerfile" > "$tmp/ctx/Dockerfile"
TOK=secret-value "$bin/buildctl" --addr "unix://$tmp/bk.sock" build --frontend dockerfile.v0 \
  --local context="$tmp/ctx" --local dockerfile="$tmp/ctx" \
  --opt build-arg:BASE="$base" --opt build-arg:VERSION=1.2.3 --opt build-arg:GITHUB_TOKEN=ghp-attest-token \
  --secret id=tok,env=TOK --opt attest:provenance=mode=max,version=v1 \
  --output type=local,dest="$tmp/out"
# The local exporter writes the statement as provenance.json; keep the
# predicate and the ports it was built with.
jq --arg reg "127.0.0.1:$reg_port" --arg http "127.0.0.1:$http_port" \
  '{registry: $reg, http: $http, statement: .}' "$tmp/out/provenance.json" > "$here/provenance-max.json"
echo "wrote $here/provenance-max.json"

# Sourced by .ci/run: starts two Debian docker-registry instances on
# loopback for the integration tests, one open and one behind htpasswd basic
# auth, exports where they are (registrytest.Shared reads these), and stops
# them, by PID, when the shell exits.
#   BUILDER_TEST_REGISTRY=127.0.0.1:PORT
#   BUILDER_TEST_REGISTRY_AUTH=USER:PASSWORD@127.0.0.1:PORT

registries_dir=$(mktemp -d /tmp/builder-ci-registries.XXXXXX)
registry_pids=()

stop_registries() {
  for pid in "${registry_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$registries_dir"
}

# listening PORT succeeds when something accepts connections on the port.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_registry NAME AUTH_BLOCK starts a registry and sets registry_addr.
# (Not in a $(...) subshell: the PID must reach registry_pids.)
start_registry() {
  local name=$1 auth=$2 port dir
  port=$((20000 + RANDOM % 20000))
  while listening "$port"; do port=$((20000 + RANDOM % 20000)); done
  dir=$registries_dir/$name
  mkdir -p "$dir/storage"
  cat > "$dir/config.yml" <<CFG
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$auth
CFG
  /usr/bin/docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 &
  registry_pids+=($!)
  for _ in $(seq 150); do
    if listening "$port"; then
      registry_addr=127.0.0.1:$port
      return 0
    fi
    sleep 0.1
  done
  echo "docker-registry $name did not start:" >&2
  cat "$dir/log" >&2
  return 1
}

trap stop_registries EXIT
registry_password=pw-$RANDOM$RANDOM
htpasswd -Bbn ci "$registry_password" > "$registries_dir/htpasswd"
start_registry open ""
open_addr=$registry_addr
start_registry auth "auth:
  htpasswd:
    realm: builder-ci
    path: $registries_dir/htpasswd"
auth_addr=$registry_addr
export BUILDER_TEST_REGISTRY=$open_addr
export BUILDER_TEST_REGISTRY_AUTH=ci:$registry_password@$auth_addr
echo "CI registries: open $open_addr, htpasswd $auth_addr"

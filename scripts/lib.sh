#!/usr/bin/env bash
# Shared helpers of the local-* scripts: messages, compose detection, env file loading.
# shellcheck disable=SC2034  # variables are used by the scripts that source this file

die() { echo "${0##*/}: $*" >&2; exit 1; }
say() { echo "==> $*"; }

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Sets COMPOSE (an array): the v2 plugin if present, else docker-compose v1.
find_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    die "neither 'docker compose' (v2 plugin) nor 'docker-compose' (v1) is installed; install one, e.g. apt-get install -y docker-compose"
  fi
}

check_docker() {
  command -v docker >/dev/null || die "the docker CLI is not installed; install Docker Engine"
  docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed); start it (systemctl start docker) or set DOCKER_HOST"
}

# For the two fresh-machine commands: a daemon that is still starting is waited for, and one that
# is not running at all is started, when this shell may (root, the local socket, no DOCKER_HOST):
# by the service manager if there is one, else dockerd itself with its log in /var/log/dockerd.log.
# Waits up to NASIKO_DOCKER_WAIT seconds (default 90), then stops with what to do.
ensure_docker_daemon() {
  local wait="${NASIKO_DOCKER_WAIT:-90}" i
  command -v docker >/dev/null || die "the docker CLI is not installed; install Docker Engine"
  docker info >/dev/null 2>&1 && return 0
  if [ -z "${DOCKER_HOST:-}" ] && [ "$(id -u)" = 0 ] && ! pgrep -x dockerd >/dev/null; then
    say "the Docker daemon is not running; starting it"
    if command -v systemctl >/dev/null && systemctl start docker >/dev/null 2>&1; then :
    elif command -v service >/dev/null && service docker start >/dev/null 2>&1 && pgrep -x dockerd >/dev/null; then :
    elif command -v dockerd >/dev/null; then
      nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
    fi
  fi
  for ((i = 0; i < wait; i++)); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "the Docker daemon is not reachable after ${wait}s (docker info failed); start it (systemctl start docker, or dockerd as root; its log may say why) or set DOCKER_HOST"
}

# Export the settings of an env file (KEY=VALUE lines) into this shell.
load_env() {
  local f="$1" line key
  [ -f "$f" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    key="${line%%=*}"
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    # the environment wins over the file
    if [ -z "${!key+x}" ]; then export "${line?}"; fi
  done < "$f"
}

cache="${NASIKO_CACHE:-$HOME/.cache/nasiko}"

# Time a step: `step "what" cmd args...` prints the step, runs it, and says how long it took.
step() {
  local what="$1" t0 rc=0; shift
  t0=$(date +%s)
  echo "==> $what"
  "$@" || rc=$?
  if [ "$rc" = 0 ]; then
    echo "    done in $(( $(date +%s) - t0 ))s"
  else
    echo "    failed after $(( $(date +%s) - t0 ))s"
  fi
  return "$rc"
}

# apt-get install the named Debian packages that are missing (pairs "command:package"); as root
# only, else it names them and stops. Package sources are the machine's own apt configuration.
ensure_packages() {
  local pair cmd pkg need=()
  for pair in "$@"; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    if [ "${cmd:0:1}" = / ]; then [ -e "$cmd" ] && continue; else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    need+=("$pkg")
  done
  [ "${#need[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "missing: ${need[*]}; install them (e.g. sudo apt-get install -y ${need[*]}) and re-run"
  fi
  echo "    installing ${need[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; } \
    || die "could not apt-get install ${need[*]}; install them and re-run"
}

# The newer Debian suite whose docker-compose package is compose v2 (a static Go binary).
compose_v2_suite=trixie

# The machine's Debian mirror and the suite it is configured for, as "URI SUITE", from its apt
# sources (deb822 or one-line form; the security archive left out); nothing when there is none.
apt_source() {
  local src=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    src="$(awk '!/security/ && /^URIs:/ && !uri {uri = $2} !/security/ && /^Suites:/ && !suite {suite = $2}
                END {if (uri && suite) print uri, suite}' /etc/apt/sources.list.d/debian.sources)"
  fi
  if [ -z "$src" ] && [ -f /etc/apt/sources.list ]; then
    src="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i < NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i, $(i + 1); exit } }' /etc/apt/sources.list)"
  fi
  [ -z "$src" ] || echo "$src"
}

# A root file system of Debian's python3 (minbase, with python-is-python3) from the machine's own
# mirror, kept as a tar in the cache and made once (debootstrap, as root); prints its path. It is
# the e2e bench's python:3.12-slim where the engine cannot pull one.
python_standin_rootfs() {
  local tar="$cache/python-standin-rootfs.tar" src root
  if [ ! -f "$tar" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing: install it (apt-get install debootstrap), as root"
    src="$(apt_source)"
    [ -n "$src" ] || die "no Debian mirror in this machine's apt sources: load python:3.12-slim into the engine instead"
    mkdir -p "$cache" && root="$(mktemp -d)"
    debootstrap --variant=minbase --include=python3,python-is-python3 "${src#* }" "$root" "${src%% *}" >&2 \
      || { rm -rf "$root"; die "debootstrap failed (run as root)"; }
    tar -C "$root" -cf "$tar.partial" . && mv "$tar.partial" "$tar"
    rm -rf "$root"
  fi
  echo "$tar"
}

# Adds $compose_v2_suite beside the configured Debian suite, from the same mirror and keyring as
# the machine's own apt sources, pinned low (priority 100) so nothing is upgraded from it.
add_newer_suite() {
  local list=/etc/apt/sources.list.d/nasiko-$compose_v2_suite.sources
  [ -f "$list" ] && return 0
  local uri="" keyring=""
  read -r uri _ < <(apt_source)
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    keyring="$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  fi
  [ -n "$uri" ] || die "cannot find a Debian mirror in this machine's apt sources; install the compose v2 plugin (docker compose) by hand"
  {
    echo "Types: deb"; echo "URIs: $uri"; echo "Suites: $compose_v2_suite"; echo "Components: main"
    [ -n "$keyring" ] && echo "Signed-By: $keyring"
  } > "$list"
  printf 'Package: *\nPin: release n=%s\nPin-Priority: 100\n' "$compose_v2_suite" > /etc/apt/preferences.d/nasiko-$compose_v2_suite
  apt-get update -q >/dev/null 2>&1 || { rm -f "$list"; die "apt-get update with the $compose_v2_suite suite failed"; }
}

# The compose v2 CLI plugin, extracted (not installed: compose v1 stays) from the
# $compose_v2_suite docker-compose package, which apt downloads by name. Cached; prints its path.
compose_plugin() {
  local out="$cache/docker-compose-v2"
  if [ ! -x "$out" ]; then
    mkdir -p "$cache"
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      die "the compose v2 plugin is missing; install it (docker compose) or re-run as root so apt can fetch it"
    fi
    add_newer_suite
    local tmp; tmp="$(mktemp -d)"
    echo "    fetching docker-compose/$compose_v2_suite with apt-get download" >&2
    (cd "$tmp" && apt-get download -q "docker-compose/$compose_v2_suite" >/dev/null 2>&1) \
      || { rm -rf "$tmp"; die "apt-get download docker-compose/$compose_v2_suite failed"; }
    dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/x"
    install -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" "$out"
    rm -rf "$tmp"
  fi
  echo "$out"
}

# Make `docker compose` (v2) available to this user.
install_compose_v2() {
  docker compose version >/dev/null 2>&1 && return 0
  local plugin
  plugin="$(compose_plugin)" || return 1
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 0755 "$plugin" "$HOME/.docker/cli-plugins/docker-compose"
}

# Load the stack's settings (the env file $1, default .env.nasiko) into this shell and set
# `project` to its compose project (NASIKO_PROJECT, default nasiko).
load_stack_env() {
  load_env "${1:-$(repo_root)/.env.nasiko}"
  project="${NASIKO_PROJECT:-nasiko}"
}

# Container ids of service $2 of project $1 (every service when $2 is empty).
service_containers() {
  local filters=(--filter "label=com.docker.compose.project=$1")
  [ -n "${2:-}" ] && filters+=(--filter "label=com.docker.compose.service=$2")
  docker ps -aq "${filters[@]}"
}

# The names agents go by, from the build agent itself (the scripts do not know the naming rule):
# one tab-separated line per name — name, container, compose project, image repository, Kong
# service, Kong route, the agent's own network (in the stack of NASIKO_NETWORK), and the green
# slot's container and compose project (an update starts beside the running version, in the
# other slot). An invalid name: the rule on stderr, exit 2. Asks this checkout's build,
# else a build-agent on PATH, else the build-agent image.
agent_names() {
  local bin
  local stack="${NASIKO_NETWORK:-nasiko-network}"
  bin="$(repo_root)/target/release/build-agent"
  if [ -x "$bin" ]; then DOCKER_NETWORK="$stack" "$bin" names "$@"; return; fi
  if command -v build-agent >/dev/null 2>&1; then DOCKER_NETWORK="$stack" build-agent names "$@"; return; fi
  docker run --rm --network none -e DOCKER_NETWORK="$stack" "nasiko/build-agent:${NASIKO_LOCAL_TAG:-local}" names "$@"
}

# The running containers of agent $1 in the stack of NASIKO_NETWORK, one per line, newest first:
# its replicas, in the blue or the green slot (both while an update switches); none: nothing.
agent_containers() {
  docker ps --format '{{.Names}}' --filter "label=nasiko.name=$1" --filter label=nasiko.type=agent \
    --filter "label=nasiko.stack=${NASIKO_NETWORK:-nasiko-network}"
}

# Field $1 (container, project, image, service, route, network) of agent $2.
agent_name_of() {
  local line
  line="$(agent_names "$2")" || return
  case "$1" in
    container) cut -f2 <<<"$line" ;;
    project) cut -f3 <<<"$line" ;;
    image) cut -f4 <<<"$line" ;;
    service) cut -f5 <<<"$line" ;;
    route) cut -f6 <<<"$line" ;;
    network) cut -f7 <<<"$line" ;;
  esac
}

# The published ports that control the platform, as "service:container-port": Kong's Admin API,
# Kong Manager and the Admin API's TLS port, the registry sidecar's API, Redis (the build agent's
# job stream, no password) and Konga (an admin UI of Kong). The stack files bind them to
# NASIKO_ADMIN_BIND_ADDRESS, which must be a loopback address.
admin_ports="kong-gateway:8001 kong-gateway:8003 kong-gateway:8444 kong-service-registry:8080 redis:6379 konga:1337"

# Is $1 a loopback address (127.0.0.0/8, ::1)?
is_loopback() {
  [[ "$1" =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ || "$1" == "::1" || "$1" == "[::1]" ]]
}

# The ports a stack publishes as compose resolves them: reads `config` output (compose v2's YAML
# or v1's) on stdin, prints "service host_ip published target" per port, host_ip "-" when compose
# publishes it on all interfaces (and published "-" when the engine picks the host port).
published_ports() {
  awk '
    function unq(s) { gsub(/^["\047]|["\047]$/, "", s); return s }
    function out() { if (item) print svc, (ip == "" ? "-" : ip), (pub == "" ? "-" : pub), tgt; item = 0; ip = pub = tgt = "" }
    function kv(s,  k) { k = s; sub(/:.*/, "", k); sub(/^[^:]*:[ ]*/, "", s); s = unq(s)
      if (k == "host_ip") ip = s; else if (k == "published") pub = s; else if (k == "target") tgt = s }
    function short(s,  n, a, i) { s = unq(s); sub(/\/[a-z]+$/, "", s); n = split(s, a, ":")
      tgt = a[n]; if (n >= 2) pub = a[n - 1]
      for (i = 1; i <= n - 2; i++) ip = ip (i > 1 ? ":" : "") a[i]
      item = 1; out() }
    /^[^ ]/ { out(); insvc = ($0 ~ /^services:/); inports = 0; next }
    !insvc { next }
    /^  [^ ][^:]*:[ ]*$/ { out(); svc = $1; sub(/:$/, "", svc); inports = 0; next }
    /^    [^ -]/ { out(); inports = ($1 == "ports:"); next }
    !inports { next }
    /^ *- / { out(); s = $0; sub(/^ *- */, "", s); if (s ~ /^[a-z_]+:( |$)/) { item = 1; kv(s) } else short(s); next }
    item { s = $0; sub(/^ */, "", s); kv(s) }
    END { out() }
  '
}

# Of the published_ports lines on stdin, those of admin ports (admin_ports) on an address that is
# not loopback ("-" is every interface).
admin_ports_off_loopback() {
  local svc ip pub tgt
  while read -r svc ip pub tgt; do
    [[ " $admin_ports " == *" $svc:$tgt "* ]] || continue
    is_loopback "$ip" || echo "$svc $ip $pub $tgt"
  done
}

# The host's routes (other than the default and Docker's own bridges) that overlap the IPv4
# subnet $1, one per line as "prefix dev": a VPN or LAN there would be shadowed by agent networks.
routes_overlapping() {
  ip -4 route show 2>/dev/null | awk -v pool="$1" '
    function ip2n(s,  p) { split(s, p, "."); return ((p[1] * 256 + p[2]) * 256 + p[3]) * 256 + p[4] }
    function first(c,  a) { split(c, a, "/"); if (a[2] == "") a[2] = 32; return ip2n(a[1]) - ip2n(a[1]) % (2 ^ (32 - a[2])) }
    function last(c,  a) { split(c, a, "/"); if (a[2] == "") a[2] = 32; return first(c) + 2 ^ (32 - a[2]) - 1 }
    $1 != "default" {
      dev = ""; for (i = 2; i < NF; i++) if ($i == "dev") dev = $(i + 1)
      # the bridges Docker makes, and the agent networks (nsk…, named by the build agent) of the pool
      if (dev ~ /^(br-|docker|veth|nsk)/) next
      if (first($1) <= last(pool) && first(pool) <= last($1)) print $1, dev
    }'
}

# The names of the agents of the stack whose shared agents network is $1: those on their own
# networks (labelled nasiko.stack=$1) and legacy ones on $1 itself; one per line.
stack_agents() {
  {
    docker ps -a --filter "label=nasiko.stack=$1" --filter label=nasiko.type --format '{{.Label "nasiko.name"}}'
    docker ps -a --filter "network=$1" --filter label=nasiko.type --format '{{.Label "nasiko.name"}}'
  } | sed '/^$/d' | sort -u
}

# Remove network $1 if it exists, taking out whoever is still on it (the gateway, Phoenix).
remove_network() {
  local c
  docker network inspect "$1" >/dev/null 2>&1 || return 0
  for c in $(docker network inspect --format '{{range $id, $c := .Containers}}{{$id}} {{end}}' "$1"); do
    docker network disconnect -f "$1" "$c" >/dev/null 2>&1 || true
  done
  docker network rm "$1" >/dev/null 2>&1 || true
}

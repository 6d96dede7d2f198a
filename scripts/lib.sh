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

# Adds $compose_v2_suite beside the configured Debian suite, from the same mirror and keyring as
# the machine's own apt sources, pinned low (priority 100) so nothing is upgraded from it.
add_newer_suite() {
  local list=/etc/apt/sources.list.d/nasiko-$compose_v2_suite.sources
  [ -f "$list" ] && return 0
  local uri="" keyring=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri="$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    keyring="$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)"
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
# service, Kong route. An invalid name: the rule on stderr, exit 2. Asks this checkout's build,
# else a build-agent on PATH, else the build-agent image.
agent_names() {
  local bin
  bin="$(repo_root)/target/release/build-agent"
  if [ -x "$bin" ]; then "$bin" names "$@"; return; fi
  if command -v build-agent >/dev/null 2>&1; then build-agent names "$@"; return; fi
  docker run --rm --network none "nasiko/build-agent:${NASIKO_LOCAL_TAG:-local}" names "$@"
}

# Field $1 (container, project, image, service, route) of agent $2.
agent_name_of() {
  local line
  line="$(agent_names "$2")" || return
  case "$1" in
    container) cut -f2 <<<"$line" ;;
    project) cut -f3 <<<"$line" ;;
    image) cut -f4 <<<"$line" ;;
    service) cut -f5 <<<"$line" ;;
    route) cut -f6 <<<"$line" ;;
  esac
}

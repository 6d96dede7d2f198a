#!/usr/bin/env bash
# Brings up the local Nasiko stack with Docker Compose: checks and installs what it needs, makes
# the settings (generated secrets), builds this project's images, starts the stack, waits until
# every service is healthy, and prints where everything is. A second run changes nothing.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/local-up.sh [--full | --standalone] [--dbless] [--env-file FILE] [--timeout SECONDS] [--no-build]

Starts the local Nasiko stack on this Docker host.
  --full        the whole Nasiko platform, from a Nasiko checkout: run this from inside the
                checkout, or set NASIKO_CHECKOUT=/path/to/nasiko. Builds what upstream builds
                (backend, router, chat history, superuser init) and pulls what it pulls (auth,
                web, Kong, Postgres, MongoDB, Redis, Konga). Links docker-compose.nasiko.yml into
                the checkout, so upstream's own `nasiko local up|down|status|logs` work too.
  --standalone  the agent pipeline only: Redis, build-agent, registry-sidecar and the project's
                stand-ins for the gateway and the backend; works on any Docker host, no registry
  (default)     --full when a checkout is found and the platform's images can be pulled, else
                --standalone, saying exactly what was missing
  --dbless      Kong without a database (KONG_DATABASE=off; also NASIKO_KONG_DATABASE=off in
                the settings): no Postgres, migrations or Konga; the registry sidecar pushes the
                whole configuration at once. With --standalone, the gateway stand-in runs DB-less
  --env-file F  settings (default .env.nasiko, made from compose-templates/nasiko.env.example)
  --timeout S   how long to wait for services to become healthy (default 300)
  --no-build    do not (re)build this project's images
Installs what is missing (as root, with apt-get): busybox-static, curl, redis-server, and the
compose v2 plugin. Settings: compose-templates/nasiko.env.example.
USAGE
}

mode=auto
dbless=0
env_file=""
timeout=300
build=1
start_dir="$PWD"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --full) mode=full ;;
    --standalone) mode=standalone ;;
    --env-file) env_file="$2"; shift ;;
    --timeout) timeout="$2"; shift ;;
    --no-build) build=0 ;;
    --dbless) dbless=1 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

root="$(repo_root)"
cd "$root"
env_file="${env_file:-$root/.env.nasiko}"

prepare_host() {
  ensure_docker_daemon
  ensure_packages busybox:busybox-static curl:curl redis-server:redis-server ss:iproute2
  install_compose_v2
  find_compose
  echo "    Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), compose: $("${COMPOSE[@]}" version --short 2>/dev/null || echo '?')"
}
step "checking the host" prepare_host

# A random secret; a Fernet key (32 bytes, url-safe base64) for the backend's encryption key.
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
fernet_key() { head -c 32 /dev/urandom | base64 | tr '+/' '-_'; }
is_fernet_key() { [ "${#1}" = 44 ] && [ "$(printf %s "$1" | tr '_-' '/+' | base64 -d 2>/dev/null | wc -c)" = 32 ]; }

# 1. settings
make_env_file() {
  if [ -f "$env_file" ]; then echo "    using $env_file"; return; fi
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      USER_CREDENTIALS_ENCRYPTION_KEY=GENERATE) echo "USER_CREDENTIALS_ENCRYPTION_KEY=$(fernet_key)" ;;
      *=GENERATE) echo "${line%=GENERATE}=$(secret)" ;;
      *) echo "$line" ;;
    esac
  done < compose-templates/nasiko.env.example > "$env_file"
  chmod 600 "$env_file"
  echo "    created $env_file (secrets generated)"
}
step "settings" make_env_file

# 2. a Nasiko checkout: NASIKO_CHECKOUT, else the folder this was started from
checkout=""
is_checkout() { [ -f "$1/app/Dockerfile" ] && [ -d "$1/agent-gateway" ]; }
if [ -n "${NASIKO_CHECKOUT:-}" ]; then
  is_checkout "$NASIKO_CHECKOUT" || die "NASIKO_CHECKOUT=$NASIKO_CHECKOUT is not a Nasiko checkout (no app/Dockerfile and agent-gateway/); clone one: git clone https://github.com/Nasiko-Labs/nasiko"
  checkout="$(cd "$NASIKO_CHECKOUT" && pwd)"
elif is_checkout "$start_dir"; then
  checkout="$start_dir"
fi
# the checkout's settings first, as upstream's CLI reads them; the environment wins over files
if [ -n "$checkout" ]; then
  for f in .nasiko.env .nasiko-local.env .env; do
    if [ -f "$checkout/$f" ]; then echo "    reading $checkout/$f"; load_env "$checkout/$f"; break; fi
  done
fi
load_env "$env_file"
project="${NASIKO_PROJECT:-nasiko}"
[ "$dbless" = 1 ] && NASIKO_KONG_DATABASE=off
case "${NASIKO_KONG_DATABASE:-postgres}" in
  off) dbless=1 ;;
  postgres) ;;
  *) die "NASIKO_KONG_DATABASE=${NASIKO_KONG_DATABASE} is not a Kong database mode this stack runs; use postgres or off" ;;
esac
export NASIKO_KONG_DATABASE="${NASIKO_KONG_DATABASE:-postgres}"
# The ports that control the platform (lib.sh admin_ports) are this machine's only, whatever
# NASIKO_BIND_ADDRESS opens.
admin_bind="${NASIKO_ADMIN_BIND_ADDRESS:-127.0.0.1}"
is_loopback "$admin_bind" || die "NASIKO_ADMIN_BIND_ADDRESS=$admin_bind (from the environment or $env_file) is not a loopback address. \
The gateway's Admin API, Kong Manager, the registry sidecar's API, Redis and Konga are published there, and whoever reaches \
them rewrites the gateway's routes or queues builds on this Docker host. Set NASIKO_ADMIN_BIND_ADDRESS=127.0.0.1 (or remove it). \
To open the gateway's proxy to the network, set NASIKO_BIND_ADDRESS=0.0.0.0 instead; to use the Admin API from another \
machine, tunnel to it: ssh -L ${NASIKO_PORT_KONG_ADMIN:-9101}:127.0.0.1:${NASIKO_PORT_KONG_ADMIN:-9101} $(hostname)"

# 3. full or standalone
pulled_images() {
  echo "${NASIKO_MONGO_IMAGE:-docker.io/library/mongo:latest}" "${NASIKO_REDIS_IMAGE:-redis:7-alpine}" \
    "${NASIKO_KONG_IMAGE:-kong:3.4}" \
    "${NASIKO_AUTH_IMAGE:-docker.io/karannasiko/nasiko-auth:latest}" "${NASIKO_WEB_IMAGE:-docker.io/karannasiko/nasiko-web:oss}"
  [ "$dbless" = 1 ] || echo "${NASIKO_POSTGRES_IMAGE:-postgres:13}" "${NASIKO_KONGA_IMAGE:-pantsel/konga:latest}"
}
missing=""
platform_reachable() {
  local img
  for img in $(pulled_images); do
    docker image inspect "$img" >/dev/null 2>&1 && continue
    echo "    pulling $img"
    docker pull -q "$img" >/dev/null 2>&1 || { missing="the image $img cannot be pulled (no registry access?)"; return 1; }
  done
}
if [ "$mode" != standalone ]; then
  if [ -z "$checkout" ]; then
    missing="no Nasiko checkout: run this from inside one, or set NASIKO_CHECKOUT=/path/to/nasiko (git clone https://github.com/Nasiko-Labs/nasiko)"
  else
    step "pulling the platform's published images" platform_reachable || true
  fi
  if [ -z "$missing" ]; then
    mode=full
  elif [ "$mode" = full ]; then
    die "cannot start the full platform: $missing. Or run: scripts/local-up.sh --standalone"
  else
    echo "note: not starting the full platform: $missing."
    echo "      Starting the STANDALONE agent pipeline instead: Redis, build-agent, registry-sidecar,"
    echo "      and STAND-INS for the gateway and backend (--full once that is solved)."
    mode=standalone
  fi
fi

port_vars=(NASIKO_PORT_KONG NASIKO_PORT_KONG_ADMIN NASIKO_PORT_SERVICE_REGISTRY)
if [ "$mode" = full ]; then
  file="$root/compose-templates/docker-compose.nasiko.yml"
  # exactly the custom Kong plugins the checkout has
  if [ -z "${KONG_PLUGINS:-}" ]; then
    KONG_PLUGINS=bundled
    for h in "$checkout"/agent-gateway/plugins/*/handler.lua; do
      [ -f "$h" ] && KONG_PLUGINS="$KONG_PLUGINS,$(basename "$(dirname "$h")")"
    done
    export KONG_PLUGINS
  fi
  if [ -n "${USER_CREDENTIALS_ENCRYPTION_KEY:-}" ] && ! is_fernet_key "$USER_CREDENTIALS_ENCRYPTION_KEY"; then
    echo "note: USER_CREDENTIALS_ENCRYPTION_KEY is not a Fernet key; the backend uses one it generates (kept in the nasiko-secrets volume)"
  fi
  # upstream's CLI runs the checkout's docker-compose.nasiko.yml: offer ours there
  link="$checkout/docker-compose.nasiko.yml"
  if [ ! -e "$link" ] && [ ! -L "$link" ]; then
    ln -s "$file" "$link"
    echo "    linked $link -> $file (upstream's 'nasiko local up|down|status|logs' use it)"
  elif ! cmp -s "$link" "$file"; then
    echo "note: $link is not this project's stack file; using $file (remove that one to let upstream's CLI use ours)"
  fi
  files=(--project-directory "$checkout" -f "$file")
  [ "$dbless" = 1 ] && files+=(-f "$root/compose-templates/docker-compose.dbless.yml")
  port_vars+=(NASIKO_PORT_KONG_MANAGER NASIKO_PORT_KONG_SSL NASIKO_PORT_KONGA NASIKO_PORT_BACKEND NASIKO_PORT_AUTH
    NASIKO_PORT_ROUTER NASIKO_PORT_CHAT NASIKO_PORT_WEB NASIKO_PORT_MONGODB NASIKO_PORT_REDIS)
else
  files=(--env-file "$env_file" -f "$root/compose-templates/docker-compose.standalone.yml")
  agents_dir="${NASIKO_AGENTS_DIR:-./agents}"
  mkdir -p "$agents_dir"
  export NASIKO_AGENTS_DIR
  NASIKO_AGENTS_DIR="$(cd "$agents_dir" && pwd)"
fi
work_dir="${NASIKO_WORK_DIR:-/var/lib/nasiko-build-agent}"
mkdir -p "$work_dir" 2>/dev/null || die "cannot create $work_dir (the build agent's work folder); create it or set NASIKO_WORK_DIR in $env_file"
compose() { "${COMPOSE[@]}" -p "$project" "${files[@]}" "$@"; }
# Docker publishes a container's ports on the first of its networks in name order: Kong's admin
# port (listening on the platform side only) needs the platform network first
platform_net="${NASIKO_PLATFORM_NETWORK:-nasiko-core}" agents_net="${NASIKO_NETWORK:-nasiko-network}"
[[ "$platform_net" < "$agents_net" ]] || die "NASIKO_PLATFORM_NETWORK ($platform_net) must sort before NASIKO_NETWORK ($agents_net): Docker publishes Kong's admin port on the first network by name. Rename one of them in $env_file"
# agents' own networks are cut from NASIKO_AGENT_SUBNET_POOL: a host route there (a VPN, a LAN)
# would be shadowed for every agent, and for the gateway
pool="${NASIKO_AGENT_SUBNET_POOL:-10.213.0.0/16}"
[[ "$pool" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || die "NASIKO_AGENT_SUBNET_POOL=$pool is not an IPv4 subnet; write e.g. 10.213.0.0/16 in $env_file"
clash="$(routes_overlapping "$pool" | awk '{printf " %s (%s)", $1, $2}')"
[ -z "$clash" ] || die "NASIKO_AGENT_SUBNET_POOL ($pool) overlaps this host's routes:$clash. Pick a free range for agents' networks in $env_file (e.g. 10.214.0.0/16)"
export NASIKO_GATEWAY_CONTAINER="${NASIKO_GATEWAY_CONTAINER:-kong-gateway}"
[ "$mode" = full ] && [ "${COMPOSE[*]}" != "docker compose" ] && die "the full platform needs compose v2 (docker compose); install it (as root this script does) and re-run"

# the same, read from compose's own resolution of the stack: a checkout's .env, which compose
# reads itself, or a changed stack file, may publish them elsewhere
check_admin_binds() {
  local out bad
  out="$(compose config 2>&1)" || { echo "$out" >&2; die "compose cannot read the stack (above)"; }
  bad="$(published_ports <<<"$out" | admin_ports_off_loopback | awk '{printf " %s:%s on %s (host port %s);", $1, $4, ($2 == "-" ? "every interface" : $2), $3}')"
  [ -z "$bad" ] || die "compose would publish ports that control the platform off loopback:$bad \
bind them to \${NASIKO_ADMIN_BIND_ADDRESS:-127.0.0.1}, and look for a NASIKO_ADMIN_BIND_ADDRESS that compose reads itself (e.g. in ${checkout:-the project folder}/.env)"
  echo "    the Admin API and the sidecar's API on $admin_bind; the proxy on ${NASIKO_BIND_ADDRESS:-127.0.0.1}"
}
step "checking what the stack publishes" check_admin_binds

# 4. ports: free, or already ours
check_ports() {
  [ "$(compose ps -q 2>/dev/null | wc -l)" -eq 0 ] || { echo "    the stack is running: its ports are its own"; return 0; }
  local var p holder defaults
  defaults="NASIKO_PORT_KONG=9100 NASIKO_PORT_KONG_ADMIN=9101 NASIKO_PORT_KONG_MANAGER=9102 NASIKO_PORT_KONG_SSL=9443 NASIKO_PORT_KONGA=1337 NASIKO_PORT_SERVICE_REGISTRY=8080 NASIKO_PORT_BACKEND=8000 NASIKO_PORT_AUTH=8082 NASIKO_PORT_ROUTER=8081 NASIKO_PORT_CHAT=8083 NASIKO_PORT_WEB=4000 NASIKO_PORT_MONGODB=27017 NASIKO_PORT_REDIS=6379"
  for var in "${port_vars[@]}"; do
    p="${!var:-}"
    [ -n "$p" ] || p="$(tr ' ' '\n' <<<"$defaults" | sed -n "s/^$var=//p")"
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
      holder="$(ss -Hltnp "sport = :$p" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -1)"
      die "port $p is in use${holder:+ by $holder}; stop it, or move the stack: set $var to a free port in $env_file"
    fi
  done
  echo "    ports free"
}
step "checking ports" check_ports

# 5. images
if [ "$build" = 1 ]; then
  if [ "$mode" = full ]; then only=registry-sidecar,build-agent,agent-base; else only=registry-sidecar,build-agent,agent-base,kong-emulator,backend-standin,redis; fi
  step "building this project's images ($only)" "$root/scripts/build-images.sh" --only "$only" --tag "${NASIKO_LOCAL_TAG:-local}"
  [ "$mode" = full ] && step "building the checkout's images (backend, router, chat history, superuser init)" compose build
fi

# 6. start and wait
step "starting the $mode stack (project $project)" compose up -d --remove-orphans
wait_healthy() {
  local deadline=$(( $(date +%s) + timeout )) svc id state pending failed bad last=""
  while :; do
    pending=(); failed=""
    for svc in $(compose ps -a --services 2>/dev/null || compose ps --services); do
      id="$(compose ps -a -q "$svc" 2>/dev/null | head -1)"
      [ -n "$id" ] || { pending+=("$svc"); continue; }
      state="$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || echo missing)"
      case "$state" in
        "running healthy"|"running ") ;;
        "exited "*)
          case "$svc" in kong-migrations|nasiko-superuser-init) [ "$(docker inspect -f '{{.State.ExitCode}}' "$id")" = 0 ] || failed="$svc" ;; *) failed="$svc" ;; esac ;;
        *unhealthy*|dead*|missing) failed="$svc" ;;
        *) pending+=("$svc") ;;
      esac
    done
    if [ -n "$failed" ] || { [ "${#pending[@]}" -gt 0 ] && [ "$(date +%s)" -ge "$deadline" ]; }; then
      bad="${failed:-${pending[0]}}"
      echo "error: service $bad is not healthy${failed:+ (it failed)}; its last log lines:" >&2
      compose logs --tail 30 "$bad" >&2 || true
      echo "(all of it: docker logs \$(${COMPOSE[*]} -p $project ps -q $bad); raise --timeout if it was only slow)" >&2
      return 1
    fi
    [ "${#pending[@]}" -eq 0 ] && return 0
    [ "${pending[*]}" != "$last" ] && echo "    waiting for: ${pending[*]}"
    last="${pending[*]}"
    sleep 2
  done
}
step "waiting for every service to be healthy (up to ${timeout}s)" wait_healthy

proxy="${NASIKO_PORT_KONG:-9100}"
echo
say "the $mode stack is up$([ "$dbless" = 1 ] && echo ", Kong DB-less")"
printf '  %-28s %s\n' "Gateway (proxy)" "http://localhost:$proxy"
printf '  %-28s %s\n' "Gateway Admin API" "http://localhost:${NASIKO_PORT_KONG_ADMIN:-9101}"
printf '  %-28s %s\n' "Registry sidecar status" "http://localhost:${NASIKO_PORT_SERVICE_REGISTRY:-8080}/status"
if [ "$mode" = full ]; then
  printf '  %-28s %s\n' "Web app" "http://localhost:${NASIKO_PORT_WEB:-4000}" "Backend API" "http://localhost:${NASIKO_PORT_BACKEND:-8000}/docs" \
    "Konga" "http://localhost:${NASIKO_PORT_KONGA:-1337}" "Checkout" "$checkout"
else
  echo "  (the gateway and the backend are the project's STAND-INS, not Kong and not the Nasiko backend)"
fi
echo
echo "Next steps:"
echo "  scripts/deploy-agent.sh path/to/agent-package --wait   # build and deploy an agent"
echo "  scripts/kong-check.sh                                   # verify the gateway's routes"
echo "  scripts/local-down.sh                                   # stop (add --volumes to delete data)"

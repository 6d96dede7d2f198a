#!/usr/bin/env bash
# Brings up the local Nasiko stack with Docker Compose: checks the host, creates the env file,
# builds this project's images, starts the stack, waits for every service to be healthy, and
# prints where everything is. Idempotent: running it again is harmless.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/local-up.sh [--standalone | --full] [--env-file FILE] [--timeout SECONDS] [--no-build]

Starts the local Nasiko stack (compose-templates/) on this Docker host.
  --full        the whole platform (Kong, backend, web, router, auth, ...): needs the platform
                images from $NASIKO_REGISTRY (or a Nasiko checkout, see README)
  --standalone  the agent pipeline only: Redis, build-agent, registry-sidecar and the project's
                stand-ins for the gateway and the backend; works on any Docker host
  (default)     --full when the platform images can be obtained, else --standalone, saying why
  --env-file F  settings (default .env.nasiko, created from compose-templates/nasiko.env.example)
  --timeout S   how long to wait for services to become healthy (default 180)
  --no-build    do not (re)build this project's images
USAGE
}

mode=auto
env_file=""
timeout=180
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --full) mode=full ;;
    --standalone) mode=standalone ;;
    --env-file) env_file="$2"; shift ;;
    --timeout) timeout="$2"; shift ;;
    --no-build) build=0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

root="$(repo_root)"
cd "$root"
env_file="${env_file:-$root/.env.nasiko}"

check_docker
find_compose
say "Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), compose: ${COMPOSE[*]}"

# 1. the env file, with generated secrets on first run
if [ ! -f "$env_file" ]; then
  say "creating $env_file from compose-templates/nasiko.env.example (secrets generated)"
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ "$line" == *=GENERATE ]]; then
      echo "${line%=GENERATE}=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    else
      echo "$line"
    fi
  done < compose-templates/nasiko.env.example > "$env_file"
  chmod 600 "$env_file"
fi
load_env "$env_file"
project="${NASIKO_PROJECT:-nasiko}"
export DOCKER_GID
DOCKER_GID="$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)"
agents_dir="${NASIKO_AGENTS_DIR:-./agents}"
mkdir -p "$agents_dir"
export NASIKO_AGENTS_DIR
NASIKO_AGENTS_DIR="$(cd "$agents_dir" && pwd)"
work_dir="${NASIKO_WORK_DIR:-/var/lib/nasiko-build-agent}"
mkdir -p "$work_dir" 2>/dev/null || die "cannot create $work_dir (the build agent's work folder); create it or set NASIKO_WORK_DIR in $env_file"

# 2. full or standalone
platform_images=(nasiko-backend nasiko-web nasiko-router nasiko-auth-service chat-history-service)
platform_available() {
  local img
  for img in "${platform_images[@]}"; do
    local ref="${NASIKO_REGISTRY:-ghcr.io/nasiko}/$img:${NASIKO_VERSION:-latest}"
    docker image inspect "$ref" >/dev/null 2>&1 && continue
    docker pull -q "$ref" >/dev/null 2>&1 || { missing_image="$ref"; return 1; }
  done
  for img in "${NASIKO_KONG_IMAGE:-kong:3.4}" "${NASIKO_POSTGRES_IMAGE:-postgres:13}"; do
    docker image inspect "$img" >/dev/null 2>&1 || docker pull -q "$img" >/dev/null 2>&1 || { missing_image="$img"; return 1; }
  done
}
missing_image=""
if [ "$mode" != standalone ]; then
  if platform_available; then
    mode=full
  elif [ "$mode" = full ]; then
    die "the platform image $missing_image cannot be obtained (no registry access?). Set NASIKO_REGISTRY/NASIKO_VERSION, build from a checkout (README), or run: scripts/local-up.sh --standalone"
  else
    echo "note: the platform image $missing_image cannot be obtained here (no registry access?)."
    echo "      Starting the STANDALONE agent pipeline instead: Redis, build-agent, registry-sidecar,"
    echo "      and STAND-INS for the gateway and backend. Use --full once the images are available."
    mode=standalone
  fi
fi
if [ "$mode" = full ]; then
  files=(-f compose-templates/docker-compose.nasiko.yml)
  if [ -d "${NASIKO_SOURCE_DIR:-../nasiko}/agent-gateway/plugins/chat-logger" ]; then
    export KONG_PLUGINS="${KONG_PLUGINS:-bundled,chat-logger,nasiko-auth}"
    export NASIKO_SOURCE_DIR
    NASIKO_SOURCE_DIR="$(cd "${NASIKO_SOURCE_DIR:-../nasiko}" && pwd)"
  else
    echo "note: no Nasiko checkout at ${NASIKO_SOURCE_DIR:-../nasiko}; Kong runs without chat-logger and nasiko-auth (the sidecar reports them as missing)"
  fi
  ports=("${NASIKO_PORT_KONG_PROXY:-9100}" "${NASIKO_PORT_KONG_ADMIN:-9101}" "${NASIKO_PORT_KONG_MANAGER:-9102}" "${NASIKO_PORT_KONGA:-1337}" "${NASIKO_PORT_BACKEND:-8000}" "${NASIKO_PORT_AUTH:-8001}" "${NASIKO_PORT_CHAT_HISTORY:-8002}" "${NASIKO_PORT_ROUTER:-8005}" "${NASIKO_PORT_WEB:-4000}" "${NASIKO_PORT_REGISTRY:-8080}")
else
  files=(-f compose-templates/docker-compose.standalone.yml)
  ports=("${NASIKO_PORT_KONG_PROXY:-9100}" "${NASIKO_PORT_KONG_ADMIN:-9101}" "${NASIKO_PORT_REGISTRY:-8080}")
fi
compose() { "${COMPOSE[@]}" -p "$project" --env-file "$env_file" "${files[@]}" "$@"; }

# 3. ports: free, or already ours
running="$(compose ps -q 2>/dev/null | wc -l)"
if [ "$running" -eq 0 ]; then
  for p in "${ports[@]}"; do
    holder="$(ss -Hltnp "sport = :$p" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -1)"
    if [ -n "$holder" ] || ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
      die "port $p is in use${holder:+ by $holder}; stop it or change its NASIKO_PORT_* setting in $env_file"
    fi
  done
fi

# 4. our images
if [ "$build" = 1 ]; then
  say "building this project's images (scripts/build-images.sh)"
  if [ "$mode" = full ]; then only=registry-sidecar,build-agent; else only=registry-sidecar,build-agent,kong-emulator,backend-standin,redis; fi
  "$root/scripts/build-images.sh" --only "$only" --tag "${NASIKO_LOCAL_TAG:-local}"
fi

# 5. start and wait
say "starting the $mode stack (project $project)"
compose up -d --remove-orphans
say "waiting for services to be healthy (timeout ${timeout}s)"
deadline=$(( $(date +%s) + timeout ))
while :; do
  pending=()
  failed=""
  for svc in $(compose ps --services); do
    id="$(compose ps -q "$svc" | head -1)"
    [ -n "$id" ] || { pending+=("$svc"); continue; }
    state="$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || echo missing)"
    case "$state" in
      "running healthy"|"running ") ;;
      "exited "*) [ "$svc" = kong-migrations ] && [ "$(docker inspect -f '{{.State.ExitCode}}' "$id")" = 0 ] || failed="$svc" ;;
      *unhealthy*|dead*|missing) failed="$svc" ;;
      *) pending+=("$svc") ;;
    esac
  done
  if [ -n "$failed" ] || { [ "${#pending[@]}" -gt 0 ] && [ "$(date +%s)" -ge "$deadline" ]; }; then
    bad="${failed:-${pending[0]}}"
    echo "error: service $bad is not healthy${failed:+ (it failed)}; its last log lines:" >&2
    compose logs --tail 30 "$bad" >&2 || true
    exit 1
  fi
  [ "${#pending[@]}" -eq 0 ] && break
  printf '    waiting for: %s\n' "${pending[*]}"
  sleep 2
done

proxy="${NASIKO_PORT_KONG_PROXY:-9100}"
echo
say "the $mode stack is up"
printf '  %-28s %s\n' "Gateway (proxy)" "http://localhost:$proxy"
printf '  %-28s %s\n' "Gateway Admin API" "http://localhost:${NASIKO_PORT_KONG_ADMIN:-9101}"
printf '  %-28s %s\n' "Registry sidecar status" "http://localhost:${NASIKO_PORT_REGISTRY:-8080}/status"
if [ "$mode" = full ]; then
  printf '  %-28s %s\n' "Web app" "http://localhost:$proxy/app" "Backend API" "http://localhost:$proxy/api" "Konga" "http://localhost:${NASIKO_PORT_KONGA:-1337}"
else
  echo "  (the gateway and the backend are the project's STAND-INS, not Kong and not the Nasiko backend)"
fi
echo
echo "Next steps:"
echo "  scripts/deploy-agent.sh path/to/agent-package     # build and deploy an agent"
echo "  scripts/kong-check.sh                               # verify the gateway's routes"
echo "  curl -X POST http://localhost:$proxy/agents/agent-NAME -d '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"message/send\",\"params\":{}}'"
echo "  scripts/local-down.sh                               # stop (add --volumes to delete data)"

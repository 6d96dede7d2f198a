#!/usr/bin/env bash
# Logs of the local stack: a service's (compose service name), an agent's (its container's and
# its last build log), or every service's.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/local-logs.sh [SERVICE | AGENT] [-f] [-n LINES] [--env-file FILE]

  SERVICE   a service of the stack (kong-gateway, nasiko-worker, kong-service-registry, ...)
  AGENT     an agent's name: its container's log, then its build log
  (none)    the last lines of every service
  -f        follow;  -n N  lines to show (default 100)
USAGE
}
target=""; follow=(); lines=100; env_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -f|--follow) follow=(-f) ;;
    -n|--lines) lines="$2"; shift ;;
    --env-file) env_file="$2"; shift ;;
    -*) die "unknown argument '$1' (see --help)" ;;
    *) target="$1" ;;
  esac
  shift
done
check_docker
project=nasiko
load_stack_env "$env_file"
if [ -z "$target" ]; then
  for id in $(service_containers "$project"); do
    echo "=== $(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")"
    docker logs --tail 20 "$id" 2>&1 | sed 's/^/  /'
  done
  exit 0
fi
ids="$(service_containers "$project" "$target")"
if [ -n "$ids" ]; then
  exec docker logs "${follow[@]}" --tail "$lines" "$(head -1 <<<"$ids")"
fi
container="$(agent_name_of container "$target" 2>/dev/null || true)"
if [ -n "$container" ] && docker inspect "$container" >/dev/null 2>&1; then
  worker="$(service_containers "$project" nasiko-worker | head -1)"
  if [ -n "$worker" ]; then
    echo "=== build log of $target (docker exec $worker build-agent logs $target)"
    docker exec "$worker" build-agent logs "$target" --lines "$lines" 2>&1 | sed 's/^/  /' || true
  fi
  echo "=== container $container"
  exec docker logs "${follow[@]}" --tail "$lines" "$container"
fi
die "'$target' is neither a service of project $project nor a deployed agent; see scripts/local-status.sh"

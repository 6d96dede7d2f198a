#!/usr/bin/env bash
# Verifies that Kong holds everything the registry sidecar wants — every static proxy, and for
# every running agent its service, route, plugins, upstream and targets — by asking the sidecar
# itself: `registry-sidecar check` in its container reads Docker, the static routes file and Kong
# as a sync does, diffs them as a sync does, and writes nothing. Exits non-zero naming each
# difference (as the write a sync would make).
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/kong-check.sh [--env-file FILE]

  --env-file FILE   the stack's settings (default .env.nasiko): which compose project to ask
Exit: 0 Kong holds everything, 1 something differs (listed), 2 something could not be read.
USAGE
}

env_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --env-file) env_file="$2"; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
check_docker
project=nasiko
load_stack_env "$env_file"
sidecar=""
for id in $(service_containers "$project" kong-service-registry); do
  if [ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" = true ]; then sidecar="$id"; fi
done
[ -n "$sidecar" ] || die "the registry sidecar of project '$project' is not running: start the stack (scripts/local-up.sh), or pass the stack's --env-file"
exec docker exec "$sidecar" /usr/local/bin/registry-sidecar check

#!/usr/bin/env bash
# Restarts a service of the local stack (or all of them), like upstream's 'nasiko local restart'.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

service=""; env_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) echo "Usage: scripts/local-restart.sh [SERVICE] [--env-file FILE]   (all services when none is named)"; exit 0 ;;
    --env-file) env_file="$2"; shift ;;
    -*) die "unknown argument '$1' (see --help)" ;;
    *) service="$1" ;;
  esac
  shift
done
check_docker
project=nasiko
load_stack_env "$env_file"
ids="$(service_containers "$project" "$service")"
what="project $project"
[ -n "$service" ] && what="service $service of project $project"
[ -n "$ids" ] || die "no $what is running; see scripts/local-status.sh"
say "restarting ${service:-every service} (project $project)"
# shellcheck disable=SC2086
docker restart -t 10 $ids >/dev/null
say "restarted; scripts/local-status.sh shows their health"

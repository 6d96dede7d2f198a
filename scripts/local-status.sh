#!/usr/bin/env bash
# One table of the local stack: every service's state and health, every agent with its version,
# route and last deploy outcome, and what the registry sidecar last did.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

env_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) echo "Usage: scripts/local-status.sh [--env-file FILE]   (like upstream's 'nasiko local status')"; exit 0 ;;
    --env-file) env_file="$2"; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
check_docker
project=nasiko
load_stack_env "$env_file"
ids="$(service_containers "$project")"
[ -n "$ids" ] || die "the stack (project $project) is not running; start it with scripts/local-up.sh"

echo "SERVICES (project $project)"
# shellcheck disable=SC2086
docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}|{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}}|{{range $p, $b := .NetworkSettings.Ports}}{{range $b}}{{.HostIp}}:{{.HostPort}}->{{$p}} {{end}}{{end}}' $ids \
  | sort | awk -F'|' 'BEGIN { printf "  %-24s %-10s %-10s %s\n", "SERVICE", "STATE", "HEALTH", "PORTS" } { printf "  %-24s %-10s %-10s %s\n", $1, $2, $3, $4 }'

worker="$(service_containers "$project" nasiko-worker | head -1)"
network="${NASIKO_NETWORK:-nasiko-network}"
echo
echo "AGENTS (each on a network of its own, $network-agent-…, or on $network)"
agents="$(stack_agents "$network")"
registry="http://localhost:${NASIKO_PORT_SERVICE_REGISTRY:-8080}"
routed="$(curl -fsS -m 3 "$registry/status" 2>/dev/null || true)"
printf '  %-24s %-10s %-10s %-10s %s\n' AGENT VERSION STATE ROUTED "LAST DEPLOY"
# shellcheck disable=SC2086  # names are the build agent's (checked by it)
[ -z "$agents" ] || table="$(agent_names $agents)" || table=""
while IFS=$'\t' read -r a c _ _ svc _; do
  [ -n "$a" ] || continue
  # the slot that runs (an update starts beside the running version, in the other slot)
  running="$(agent_containers "$a" | head -1)"
  [ -z "$running" ] || c="$running"
  version="$(docker inspect -f '{{index .Config.Labels "nasiko.version"}}' "$c" 2>/dev/null || echo '?')"
  state="$(docker inspect -f '{{.State.Status}}' "$c" 2>/dev/null || echo gone)"
  route=no; grep -q "\"$svc\"" <<<"$routed" && route=yes
  last="-"
  if [ -n "$worker" ]; then
    s="$(docker exec "$worker" build-agent status "$a" 2>/dev/null || true)"
    last="$(sed -n 's/^status: //p' <<<"$s") $(sed -n 's/^last_updated: //p' <<<"$s" | cut -c1-19) $(sed -n 's/^message: //p' <<<"$s" | cut -c1-60)"
  fi
  printf '  %-24s %-10s %-10s %-10s %s\n' "$a" "${version:--}" "$state" "$route" "$last"
done <<<"${table:-}"
[ -n "$agents" ] || echo "  (none; deploy one: scripts/deploy-agent.sh examples/hello-agent --wait)"

echo
echo "REGISTRY SIDECAR ($registry/status)"
if [ -n "$routed" ] && command -v jq >/dev/null; then
  jq -r '"  status \(.status), Kong \(.kong_status), Docker \(.docker_status); last sync \(.last_sync) (\(.last_sync_writes) writes); \(.services_count) services" + (if .last_error then "\n  last error: \(.last_error)" else "" end) + (if (.missing_plugins|length) > 0 then "\n  Kong lacks plugins: \(.missing_plugins|join(", "))" else "" end)' <<<"$routed"
elif [ -n "$routed" ]; then
  echo "  $routed"
else
  echo "  not answering (is kong-service-registry running? scripts/local-logs.sh kong-service-registry)"
fi

echo
echo "AGENT GUARD (agents' networks routed into no other Docker bridge; README: The agent guard)"
guard="$(service_containers "$project" agent-guard | head -1)"
if [ -z "$guard" ]; then
  echo "  not running: agents are fenced by Docker's isolation alone (Docker before 28.0 lifts it while it makes a network)"
else
  echo "  $(docker inspect -f '{{.State.Status}}' "$guard"): $(docker logs --tail 1 "$guard" 2>&1 | cut -c1-160)"
fi

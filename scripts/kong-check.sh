#!/usr/bin/env bash
# Verifies through a Kong Admin API (real Kong or the emulator) that the static proxies and the
# route of every running agent container exist, and that each such container is a target of its
# agent's upstream. Exits non-zero naming what is missing.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/kong-check.sh [--admin URL] [--network NAME] [--static-file FILE]

  --admin URL        Kong Admin API (default $KONG_ADMIN_URL or http://localhost:9101)
  --network NAME     the agents network (default $NASIKO_NETWORK or nasiko-network)
  --static-file F    the static routes file (default compose-templates/static-routes.yml)
Needs curl and jq.
USAGE
}

admin="${KONG_ADMIN_URL:-http://localhost:${NASIKO_PORT_KONG_ADMIN:-9101}}"
network="${NASIKO_NETWORK:-nasiko-network}"
static_file="$(repo_root)/compose-templates/static-routes.yml"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --admin) admin="$2"; shift ;;
    --network) network="$2"; shift ;;
    --static-file) static_file="$2"; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
# the agents' own networks are named after the stack's network
export NASIKO_NETWORK="$network"
command -v jq >/dev/null || die "jq is not installed (apt-get install -y jq)"
curl -fsS -m 5 "$admin/" >/dev/null || die "no Kong Admin API answers at $admin; pass --admin URL"

# every route name, following pagination
routes=""
next="/routes?size=1000"
while [ -n "$next" ] && [ "$next" != null ]; do
  page="$(curl -fsS -m 10 "$admin$next")"
  routes+="$(jq -r '.data[].name // empty' <<<"$page")"$'\n'
  next="$(jq -r '.next // empty' <<<"$page")"
done

missing=0
check() {
  if grep -qx "$1" <<<"$routes"; then
    printf '  ok       %s\n' "$1"
  else
    printf '  MISSING  %s (%s)\n' "$1" "$2"
    missing=$((missing + 1))
  fi
}
echo "static proxies:"
while read -r name; do
  check "$name-route" "static proxy"
done < <(sed -n 's/^  - name: *\([A-Za-z0-9._~-]*\).*/\1/p' "$static_file")
echo "agents of the stack (on their own networks, or on $network):"
agents=0
while read -r cname label; do
  [ -n "$cname" ] || continue
  name="$label"
  # unlabelled agent-* containers: the sidecar's fallback (the name after "agent-")
  if [ -z "$name" ] || [ "$name" = "<no value>" ]; then name="${cname#agent-}"; fi
  if route="$(agent_name_of route "$name" 2>/dev/null)"; then
    check "$route" "container $cname"
    # the container is a target of its agent's upstream (weight 0: being drained)
    upstream="$(agent_name_of service "$name")"
    # its address on its own network, else (legacy) on the shared one
    ip=""
    for net in "$(agent_name_of network "$name")" "$network"; do
      [ -n "$ip" ] || ip="$(docker inspect -f "{{with index .NetworkSettings.Networks \"$net\"}}{{.IPAddress}}{{end}}" "$cname" 2>/dev/null)"
    done
    weight="$(curl -fsS -m 5 "$admin/upstreams/$upstream/targets?size=1000" 2>/dev/null |
      jq -r --arg ip "$ip" '.data[] | select(.target | startswith($ip + ":")) | .weight' | head -n1)"
    if [ -z "$weight" ]; then
      printf '  MISSING  target %s of upstream %s (container %s; not ready yet, or the sidecar is behind)\n' "$ip" "$upstream" "$cname"
      missing=$((missing + 1))
    elif [ "$weight" = 0 ]; then
      printf '  ok       target %s of %s, drained (weight 0: an older version on its way out)\n' "$ip" "$upstream"
    else
      printf '  ok       target %s of %s, weight %s\n' "$ip" "$upstream" "$weight"
    fi
  else
    printf '  SKIPPED  %s (not a valid agent name; the sidecar does not route it)\n' "$cname"
  fi
  agents=$((agents + 1))
done < <({
  docker ps --filter "label=nasiko.stack=$network" --filter label=nasiko.type=agent --format '{{.Names}} {{.Label "nasiko.name"}}'
  docker ps --filter "network=$network" --format '{{.Names}} {{.Label "nasiko.name"}}'
} | sort -u | awk '$2 != "" && $2 != "<no" || $1 ~ /^agent-/')
[ "$agents" -gt 0 ] || echo "  (no running agent containers)"
if [ "$missing" -gt 0 ]; then
  echo "$missing route(s) or target(s) missing" >&2
  exit 1
fi
echo "all routes and targets present"

#!/usr/bin/env bash
# Stops the local Nasiko stack (either mode) and, with --volumes, deletes its data after asking.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/local-down.sh [--volumes [--yes]] [--agents] [--env-file FILE]

Stops and removes the stack's containers and its network.
  --volumes   also delete the stack's volumes (Redis, MongoDB, Kong data); asks first
  --yes       do not ask (for scripts)
  --agents    also remove the agents deployed on this stack's network (their containers,
              dependencies and images)
USAGE
}

volumes=0
yes=0
agents=0
env_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --volumes) volumes=1 ;;
    --yes) yes=1 ;;
    --agents) agents=1 ;;
    --env-file) env_file="$2"; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

root="$(repo_root)"
cd "$root"
env_file="${env_file:-$root/.env.nasiko}"
check_docker
find_compose
load_env "$env_file"
project="${NASIKO_PROJECT:-nasiko}"
env_args=()
[ -f "$env_file" ] && env_args=(--env-file "$env_file")

if [ "$volumes" = 1 ] && [ "$yes" = 0 ]; then
  read -r -p "Delete the volumes of project '$project' (Redis, MongoDB and Kong data)? [y/N] " answer
  [[ "$answer" =~ ^[Yy] ]] || { echo "keeping the volumes"; volumes=0; }
fi
if [ "$agents" = 1 ]; then
  names="$(stack_agents "${NASIKO_NETWORK:-nasiko-network}")"
  # shellcheck disable=SC2086  # names are the build agent's (checked by it below)
  [ -z "$names" ] || table="$(agent_names $names)" || die "cannot tell the agents' names (see above); is the build-agent image there?"
  while IFS=$'\t' read -r n _ proj repo _ _ own _ green_proj; do
    [ -n "$n" ] || continue
    say "removing agent $n"
    ids="$(docker ps -aq --filter "label=nasiko.name=$n")"
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker rm -f -v $ids >/dev/null
    # by tag, not by id: identical builds of other agents share an image id
    imgs="$(docker images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$repo")"
    # shellcheck disable=SC2086
    [ -z "$imgs" ] || docker rmi $imgs >/dev/null 2>&1 || true
    for p in "$proj" ${green_proj:+"$green_proj"}; do
      for net in $(docker network ls -q --filter "label=com.docker.compose.project=$p"); do docker network rm "$net" >/dev/null || true; done
      for vol in $(docker volume ls -q --filter "label=com.docker.compose.project=$p"); do docker volume rm "$vol" >/dev/null || true; done
    done
    remove_network "$own"
  done <<<"${table:-}"
  # networks the build agent made for this stack's packages, once no agent uses them (another
  # stack's are not ours to remove, even while they are empty: a deploy may be about to use one)
  for net in $(docker network ls -q --filter label=nasiko.managed-by=build-agent --filter "label=nasiko.stack=${NASIKO_NETWORK:-nasiko-network}"); do
    docker network rm "$net" >/dev/null 2>&1 || true
  done
fi
down=(down --remove-orphans)
[ "$volumes" = 1 ] && down+=(--volumes)
if [ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$project")" ] || [ "$volumes" = 1 ]; then
  say "stopping project $project"
  if [ "${COMPOSE[*]}" = "docker compose" ]; then
    # v2 takes the project by name, whichever stack file (full or standalone) started it
    docker compose -p "$project" "${down[@]}"
  else
    for f in compose-templates/docker-compose.standalone.yml compose-templates/docker-compose.nasiko.yml; do
      "${COMPOSE[@]}" -p "$project" "${env_args[@]}" -f "$f" "${down[@]}" 2>/dev/null || true
    done
  fi
fi
# the network the build agent runs builds on (labelled with the stack): nothing is on it now
for net in $(docker network ls -q --filter "label=nasiko.build-network=${NASIKO_NETWORK:-nasiko-network}"); do
  docker network rm "$net" >/dev/null 2>&1 || true
done
if docker network inspect "${NASIKO_NETWORK:-nasiko-network}" >/dev/null 2>&1; then
  if ! docker network rm "${NASIKO_NETWORK:-nasiko-network}" >/dev/null 2>&1; then
    echo "note: network ${NASIKO_NETWORK:-nasiko-network} is still used by agent containers; remove them with --agents"
  fi
fi
say "stopped"

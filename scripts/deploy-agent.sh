#!/usr/bin/env bash
# Queues a deployment of an agent package folder through the running stack's build agent
# (`build-agent submit`, exactly the job the Nasiko backend would queue).
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/deploy-agent.sh DIR [--name NAME] [--version V] [--owner ID] [--update] [--wait]

Copies the package DIR (a Dockerfile, usually docker-compose.yml and AgentCard.json) into the
agents folder as NAME/V and queues a deploy_agent job (update_agent with --update).
  --name NAME   agent name (default: the folder's name); lower-case letters, digits, _ . -
  --version V   version folder (default v1.0.0)
  --owner ID    owner id put in the job
  --wait        wait for the build agent to finish and print the result
USAGE
}

dir=""; name=""; version="v1.0.0"; owner=""; action=""; wait=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name) name="$2"; shift ;;
    --version) version="$2"; shift ;;
    --owner) owner="$2"; shift ;;
    --update) action=update_agent ;;
    --wait) wait=1 ;;
    -*) die "unknown argument '$1' (see --help)" ;;
    *) dir="$1" ;;
  esac
  shift
done
[ -n "$dir" ] || { usage; exit 2; }
[ -f "$dir/Dockerfile" ] || die "$dir has no Dockerfile; an agent package needs one"
name="${name:-$(basename "$(cd "$dir" && pwd)")}"
[[ "$name" =~ ^[a-z0-9][a-z0-9_.-]*$ ]] || die "'$name' is not a valid agent name (lower-case letters, digits, _ . -); pass --name"
[[ "$version" =~ ^[A-Za-z0-9._-]+$ ]] || die "'$version' is not a valid version folder name"

root="$(repo_root)"
load_env "$root/.env.nasiko"
check_docker
project="${NASIKO_PROJECT:-nasiko}"
worker="$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=nasiko-worker" | head -1)"
[ -n "$worker" ] || die "the build agent (nasiko-worker) of project '$project' is not running; start the stack with scripts/local-up.sh"
# the folder the running build agent reads packages from (the checkout's ./agents in the full stack)
agents_dir="$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/app/agents"}}{{.Source}}{{end}}{{end}}' "$worker")"
[ -n "$agents_dir" ] || die "the build agent $worker has no /app/agents mount; is it this project's stack?"
dest="$agents_dir/$name/$version"
mkdir -p "$dest"
cp -R "$dir/." "$dest/"
args=(submit --agent-name "$name" --agent-path "/app/agents/$name/$version" --version "$version" --owner-id "$owner")
[ -n "$action" ] && args+=(--action "$action")
id="$(docker exec "$worker" build-agent "${args[@]}")"
say "queued job $id for agent '$name' ($dest)"
if [ "$wait" = 1 ]; then
  for _ in $(seq 1 300); do
    status="$(docker exec "$worker" build-agent status "$name" | sed -n 's/^status: //p')"
    case "$status" in
      completed) docker exec "$worker" build-agent status "$name"; exit 0 ;;
      failed) docker exec "$worker" build-agent status "$name" >&2; exit 1 ;;
    esac
    sleep 1
  done
  die "timed out waiting for agent '$name'; see: docker exec $worker build-agent logs $name"
fi
echo "follow it with: docker exec $worker build-agent status $name"

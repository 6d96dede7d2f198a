#!/usr/bin/env bash
# Queues a deployment of an agent package folder through the running stack's build agent
# (`build-agent submit`, exactly the job the Nasiko backend would queue).
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/deploy-agent.sh DIR [--name NAME] [--version V] [--owner ID] [--update] [--wait] [--watch] [--env-file F]

Copies the package DIR (a Dockerfile, usually docker-compose.yml and AgentCard.json) into the
running stack's agents folder as NAME/V and queues a deploy_agent job, exactly as the Nasiko
backend would (update_agent with --update).
  --name NAME   agent name (default: the folder's name); lower-case letters, digits, _ . -
  --version V   version folder (default v1.0.0)
  --owner ID    owner id put in the job
  --wait        wait for this job to finish and print the result
  --env-file F  the stack's settings (default .env.nasiko): which compose project to deploy to
  --watch       deploy, then follow every change of DIR (debounced), printing each outcome and
                its time. When only files that the Dockerfile COPYs after its last RUN changed,
                they are copied into the running container at the paths a build would give
                them and the container is restarted: no build (`build-agent sync-plan` says
                where, or why a build is needed). Any other change (the Dockerfile, the compose
                file, the card, dependencies read by a RUN step, a removed file) redeploys,
                replacing the running container in place (update_strategy=recreate: quicker than
                starting the new version beside it, as an update does by default).
                A save that changes nothing does nothing. Ctrl-C stops watching.
Examples: scripts/deploy-agent.sh examples/hello-agent --wait
          scripts/deploy-agent.sh examples/hello-agent --watch
USAGE
}

dir=""; name=""; version="v1.0.0"; owner=""; action=""; wait=0; watch=0; env_file=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name) name="$2"; shift ;;
    --version) version="$2"; shift ;;
    --owner) owner="$2"; shift ;;
    --update) action=update_agent ;;
    --wait) wait=1 ;;
    --watch) watch=1; wait=1 ;;
    --env-file) env_file="$2"; shift ;;
    -*) die "unknown argument '$1' (see --help)" ;;
    *) dir="$1" ;;
  esac
  shift
done
[ -n "$dir" ] || { usage; exit 2; }
[ -d "$dir" ] || die "$dir is not a folder; pass an agent package folder (e.g. examples/hello-agent)"
[ -f "$dir/Dockerfile" ] || die "$dir has no Dockerfile; an agent package needs one (see examples/hello-agent)"
dir="$(cd "$dir" && pwd)"
name="${name:-$(basename "$dir")}"
[[ "$version" =~ ^[A-Za-z0-9._-]+$ ]] || die "'$version' is not a valid version folder name (letters, digits, . _ -)"

root="$(repo_root)"
load_env "${env_file:-$root/.env.nasiko}"
check_docker
# the build agent's own name rule (it is also what makes "$name" safe in a path below)
agent_names "$name" >/dev/null || die "pass a valid agent name with --name (the rule is above)"
project="${NASIKO_PROJECT:-nasiko}"
worker="$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=nasiko-worker" | head -1)"
[ -n "$worker" ] || die "the build agent (nasiko-worker) of project '$project' is not running; start the stack with scripts/local-up.sh"
# the folder the running build agent reads packages from (the checkout's ./agents in the full stack)
agents_dir="$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/app/agents"}}{{.Source}}{{end}}{{end}}' "$worker")"
[ -n "$agents_dir" ] || die "the build agent $worker has no /app/agents mount; is it this project's stack?"
dest="$agents_dir/$name/$version"

# The package's files, one "checksum  ./path" line each (editors' swap files left out).
listing() {
  (cd "$dir" && find . -type f ! -name '*.swp' ! -name '*~' ! -name '.#*' -print0 | sort -z | xargs -0 -r md5sum)
}

# The package as the build agent reads it: what a deploy builds, and what a sync copies from.
copy_package() {
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp" && cp -R "$dir/." "$dest.tmp/" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# Copy, queue, and (with --wait) wait for this job's own terminal status: `build-agent submit
# --wait` prints the job's id as soon as it is queued, then its outcome, and exits with it.
deploy_once() {
  local t0 id outcome rc
  t0=$(date +%s%N)
  copy_package
  local args=(submit --agent-name "$name" --agent-path "/app/agents/$name/$version" --version "$version" --owner-id "$owner")
  [ -n "$action" ] && args+=(--action "$action")
  [ "$watch" = 1 ] && args+=(--update-strategy recreate)
  [ "$wait" = 1 ] && args+=(--wait 240)
  # the id, then (with --wait) the outcome, then the exit code: read as they come
  exec 3< <(docker exec "$worker" build-agent "${args[@]}"; echo "exit:$?")
  IFS= read -r id <&3 || id="exit:1"
  case "$id" in exit:*) exec 3<&-; echo "error: cannot queue the job (see above)" >&2; return 1 ;; esac
  say "queued job $id for agent '$name' ($dest)"
  if [ "$wait" = 0 ]; then
    exec 3<&-
    echo "follow it with: docker exec $worker build-agent status $name"
    return 0
  fi
  IFS= read -r outcome <&3 || outcome="exit:1"
  rc="$outcome"
  case "$outcome" in exit:*) ;; *) IFS= read -r rc <&3 || rc="exit:1" ;; esac
  exec 3<&-
  if [ "$rc" = "exit:0" ]; then
    printf '==> %s: %s (%s ms with the copy)\n' "$name" "$outcome" "$(( ($(date +%s%N) - t0) / 1000000 ))"
    return 0
  fi
  echo "    the build log: docker exec $worker build-agent logs $name" >&2
  return 1
}

if [ "$watch" = 0 ]; then
  deploy_once
  exit $?
fi

# A deploy runs in the background and is waited for: a trapped Ctrl-C (or TERM) interrupts `wait`
# at once, where bash would first let a foreground command finish (a deploy's wait can be long).
deploying=
# where synced files are given their modification time (stamped_copy)
stamps="$(mktemp -d "${TMPDIR:-/tmp}/nasiko-sync.XXXXXX")"
trap 'rm -rf "$stamps"' EXIT
trap 'echo; [ -z "$deploying" ] || { pkill -P "$deploying"; kill "$deploying"; } 2>/dev/null; say "stopped watching $dir"; exit 0' INT TERM
# (deployed=1 while the last deploy completed: only then is the running container the package's
# and a sync of its files right)
deployed=0
deploy_in_background() {
  deploy_once & deploying=$!
  if wait "$deploying"; then deployed=1; else deployed=0; fi
  deploying=
}
# The last modification time given to a synced file, in unix seconds.
synced_at=$(date +%s)

# Sets `copy` to a copy of file $1 in $2 whose modification time is a second no earlier sync
# used: Python takes its cached bytecode as current while a source keeps its size and its mtime's
# second, so two edits of one length within a second would otherwise run the first one's code.
stamped_copy() {
  local now
  now=$(date +%s)
  synced_at=$(( now > synced_at ? now : synced_at + 1 ))
  copy="$2/$(basename "$1")"
  cp "$1" "$copy" \
    && TZ=UTC touch -t "$(date -u -d "@$synced_at" +%Y%m%d%H%M.%S 2>/dev/null || date -u -r "$synced_at" +%Y%m%d%H%M.%S)" "$copy"
}

# Sync the changed files $@ (package paths) into the running agent (each of its replicas), as
# `build-agent sync-plan` places them, and restart it; returns 1 (having said why) when a deploy
# is needed instead.
sync_once() {
  local t0 plan kind f to c copy n=0 containers=()
  t0=$(date +%s%N)
  copy_package
  mapfile -t containers < <(agent_containers "$name")
  if [ -z "${containers[0]:-}" ]; then
    say "change in $dir: redeploying ($name is not running)"
    return 1
  fi
  plan="$(docker exec "$worker" build-agent sync-plan "/app/agents/$name/$version" "$@")" \
    || { say "change in $dir: redeploying (cannot plan a sync)"; return 1; }
  while IFS=$'\t' read -r kind f to; do
    case "$kind" in
      build) say "change in $dir: redeploying ($f)"; return 1 ;;
      sync) stamped_copy "$dir/$f" "$stamps" \
              || { say "change in $dir: redeploying (cannot copy $f)"; return 1; }
            for c in "${containers[@]}"; do
              docker cp "$copy" "$c:$to" >/dev/null \
                || { say "change in $dir: redeploying (cannot copy $f to $to in $c)"; return 1; }
            done
            n=$((n + 1)) ;;
    esac
  done <<<"$plan"
  if [ "$n" = 0 ]; then
    say "change in $dir: no file of the image changed; nothing to do"
    return 0
  fi
  # its process killed and started again: a one-call restart, not waiting for a clean stop
  docker restart -t 0 "${containers[@]}" >/dev/null \
    || { say "change in $dir: redeploying (${containers[*]} did not start again)"; return 1; }
  printf '==> %s: synced %s file(s) into %s and restarted it, no build (%s ms); a deploy builds the same files\n' \
    "$name" "$n" "${containers[*]}" "$(( ($(date +%s%N) - t0) / 1000000 ))"
}

# The package paths that differ between listings $1 (before) and $2 (now); none when a file
# was removed (a sync cannot remove it: redeploy).
changed_files() {
  local gone
  gone="$(comm -23 <(cut -c35- <<<"$1" | sort) <(cut -c35- <<<"$2" | sort))"
  [ -z "$gone" ] || return 1
  comm -13 <(sort <<<"$1") <(sort <<<"$2") | cut -c37-
}

# the listing of what is deployed, taken before: an edit during the deploy is seen
last="$(listing)"
deploy_in_background
say "watching $dir (Ctrl-C to stop)"
while sleep 0.05; do
  now="$(listing)"
  [ "$now" = "$last" ] && continue
  # debounce: wait until the files have stopped changing for 50 ms (an editor's save is one
  # write or one rename; a checkout of many files goes on changing)
  while sleep 0.05; do
    again="$(listing)"
    [ "$again" = "$now" ] && break
    now="$again"
  done
  # a save seen half-written (truncated, then written) may settle back where it was: no change
  [ "$now" = "$last" ] && continue
  files=()
  if list="$(changed_files "$last" "$now")"; then
    mapfile -t files <<<"$list"
  fi
  last="$now"
  if [ "$deployed" = 1 ] && [ "${#files[@]}" -gt 0 ] && [ -n "${files[0]}" ] && sync_once "${files[@]}"; then
    continue
  fi
  if [ "$deployed" = 0 ]; then
    say "change in $dir: redeploying (the last deploy did not complete)"
  elif [ "${#files[@]}" = 0 ]; then
    say "change in $dir: redeploying (a file was removed)"
  fi
  deploy_in_background
done

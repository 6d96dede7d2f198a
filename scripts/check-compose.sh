#!/usr/bin/env bash
# Validates the stack files with `config`: the standalone file under compose v1 and v2, and the
# full-platform file (compose v2) inside the Nasiko checkout NASIKO_CHECKOUT when one is given.
# The full file against upstream's real tree is the fidelity test's job
# (cargo test -p nasiko-tests --test nasiko_checkout); nothing here invents a checkout.
# Then the host addresses of every stack file's ports, read from compose's own `config` (every
# compose installed; the full file, with and without the DB-less override, with compose v2 and
# every profile): with the files' defaults every port is published on a loopback address; with
# NASIKO_BIND_ADDRESS=0.0.0.0 (a user opening the proxy) the ports that control the platform
# (lib.sh admin_ports) stay on loopback while the gateway's proxy opens.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "Usage: [NASIKO_CHECKOUT=/path/to/nasiko] scripts/check-compose.sh"
  exit 0
fi
cd "$(repo_root)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed 's/=GENERATE$/=test-secret/' compose-templates/nasiko.env.example > "$tmp/env"
flavors=()
docker compose version >/dev/null 2>&1 && flavors+=("docker compose")
command -v docker-compose >/dev/null 2>&1 && flavors+=("docker-compose")
[ "${#flavors[@]}" -gt 0 ] || die "no compose installed"
for flavor in "${flavors[@]}"; do
  read -r -a c <<<"$flavor"
  "${c[@]}" --env-file "$tmp/env" -f compose-templates/docker-compose.standalone.yml config -q
  echo "ok: standalone, $flavor"
done
if [ -n "${NASIKO_CHECKOUT:-}" ]; then
  docker compose version >/dev/null 2>&1 || die "the full-platform file needs compose v2"
  docker compose -p nasiko --project-directory "$NASIKO_CHECKOUT" -f compose-templates/docker-compose.nasiko.yml config -q
  echo "ok: full platform in $NASIKO_CHECKOUT"
  docker compose -p nasiko --project-directory "$NASIKO_CHECKOUT" -f compose-templates/docker-compose.nasiko.yml \
    -f compose-templates/docker-compose.dbless.yml config -q
  echo "ok: full platform, DB-less Kong, in $NASIKO_CHECKOUT"
fi

# A clean environment: what this shell exports must not decide what is checked.
clean=(env -i "PATH=$PATH" "HOME=$HOME")
[ -n "${DOCKER_HOST:-}" ] && clean+=("DOCKER_HOST=$DOCKER_HOST")
# The ports of a stack as compose resolves them; $1 says which, $2 is env assignments ("" for
# none), the rest the compose command before `config`.
resolved_ports() {
  local what="$1" assign="$2" out; shift 2
  local vars=()
  [ -n "$assign" ] && read -r -a vars <<<"$assign"
  out="$("${clean[@]}" "${vars[@]}" "$@" config)" || die "$what: compose config failed"
  published_ports <<<"$out"
}
check_binds() {
  local what="$1" ports bad svc ip pub tgt a opened; shift
  # 1. the files' own defaults: every port on a loopback address
  ports="$(resolved_ports "$what" "" "$@")"
  [ -n "$ports" ] || die "$what: no published port read from compose's config; the check would prove nothing"
  bad=""
  while read -r svc ip pub tgt; do
    is_loopback "$ip" || bad+=" $svc:$tgt on ${ip/#-/every interface} (host port $pub);"
  done <<<"$ports"
  [ -z "$bad" ] || die "$what: published off loopback with the default settings:$bad publish every port on \${NASIKO_BIND_ADDRESS:-127.0.0.1} (or \${NASIKO_ADMIN_BIND_ADDRESS:-127.0.0.1} for a port that controls the platform)"
  # 2. a user opens the proxy, with the files' defaults and with the example settings
  for env_args in "" "--env-file $tmp/env"; do
    # shellcheck disable=SC2086  # env_args is empty or two words
    ports="$(resolved_ports "$what" "NASIKO_BIND_ADDRESS=0.0.0.0" "$@" ${env_args})"
    bad="$(admin_ports_off_loopback <<<"$ports" | awk '{printf " %s:%s on %s (host port %s);", $1, $4, ($2 == "-" ? "every interface" : $2), $3}')"
    [ -z "$bad" ] || die "$what: with NASIKO_BIND_ADDRESS=0.0.0.0${env_args:+ and the example settings}, ports that control the platform are published off loopback:$bad bind them to \${NASIKO_ADMIN_BIND_ADDRESS:-127.0.0.1}"
    grep -q '^kong-gateway 0\.0\.0\.0 [^ ]* 8000$' <<<"$ports" \
      || die "$what: NASIKO_BIND_ADDRESS=0.0.0.0 does not open the gateway's proxy; is the variable read? ports: $(tr '\n' ';' <<<"$ports")"
    for a in kong-gateway:8001 kong-service-registry:8080; do
      grep -q "^${a%%:*} [^ ]* [^ ]* ${a#*:}$" <<<"$ports" || die "$what: $a is not published; the admin check found nothing to check"
    done
  done
  opened="$(awk '!/^[^ ]+ (127\.|::1 )/ {printf " %s:%s", $1, $4}' <<<"$ports")"
  echo "ok: $what: every port on loopback by default; NASIKO_BIND_ADDRESS=0.0.0.0 opens only:$opened"
}
for flavor in "${flavors[@]}"; do
  read -r -a c <<<"$flavor"
  check_binds "standalone, $flavor" "${c[@]}" -f compose-templates/docker-compose.standalone.yml
done
if docker compose version >/dev/null 2>&1; then
  full=(docker compose -f compose-templates/docker-compose.nasiko.yml)
  check_binds "full platform, docker compose" "${full[@]}" --profile observability --profile kong-db
  check_binds "full platform, DB-less Kong, docker compose" "${full[@]}" -f compose-templates/docker-compose.dbless.yml \
    --profile observability --profile kong-db
else
  echo "note: compose v2 is not installed; the full-platform file's ports are not checked"
fi

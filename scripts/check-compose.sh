#!/usr/bin/env bash
# Validates the stack files with `config`: the standalone file under compose v1 and v2, and the
# full-platform file (compose v2) inside the Nasiko checkout NASIKO_CHECKOUT when one is given.
# The full file against upstream's real tree is the fidelity test's job
# (cargo test -p nasiko-tests --test nasiko_checkout); nothing here invents a checkout.
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

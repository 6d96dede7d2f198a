#!/usr/bin/env bash
# Validates the stack files with `config` under compose v1 and v2 (whichever are installed):
# the full platform file, with and without the source-build file, and the standalone file.
set -euo pipefail
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "Usage: scripts/check-compose.sh   (validates compose-templates/*.yml with docker compose config)"
  exit 0
fi
cd "$(repo_root)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed 's/=GENERATE$/=test-secret/' compose-templates/nasiko.env.example > "$tmp/env"
# a stand-in checkout with the folders the source-build file refers to
for d in agent-gateway/router auth-service agent-gateway/chat-history app web agent-gateway/plugins/chat-logger agent-gateway/plugins/nasiko-auth; do
  mkdir -p "$tmp/src/$d"
done
touch "$tmp/src/app/Dockerfile"
flavors=()
docker compose version >/dev/null 2>&1 && flavors+=("docker compose")
command -v docker-compose >/dev/null 2>&1 && flavors+=("docker-compose")
[ "${#flavors[@]}" -gt 0 ] || die "no compose installed"
for flavor in "${flavors[@]}"; do
  read -r -a c <<<"$flavor"
  "${c[@]}" --env-file "$tmp/env" -f compose-templates/docker-compose.nasiko.yml config -q
  NASIKO_SOURCE_DIR="$tmp/src" "${c[@]}" --env-file "$tmp/env" -f compose-templates/docker-compose.nasiko.yml -f compose-templates/docker-compose.source.yml config -q
  "${c[@]}" --env-file "$tmp/env" -f compose-templates/docker-compose.standalone.yml config -q
  # a missing secret is an error that names it
  if "${c[@]}" -f compose-templates/docker-compose.nasiko.yml config -q 2>"$tmp/err"; then
    die "$flavor accepted the platform file without secrets"
  fi
  grep -q "MONGO_PASSWORD\|KONG_PG_PASSWORD\|JWT_SECRET\|KONGA_TOKEN_SECRET" "$tmp/err" || { cat "$tmp/err" >&2; die "the missing-secret error does not name the secret"; }
  echo "ok: $flavor"
done

#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs (redis-server, the
# ShellCheck linter, busybox-static), checks the Docker daemon, then fmt, clippy, ShellCheck and
# every test of the workspace (real Docker engine, real redis-server, real docker compose).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/test.sh [--unit] [--no-install] [--first-run]

Runs formatting and lint checks and the whole test suite of the workspace, in two tiers:
  unit tier      fmt, clippy and every test that needs no Docker engine, Redis or images: what
                 `cargo test` alone runs (unit tests, the Kong emulator's conformance, the
                 Kubernetes discovery, the build agent's commands and its hostile corpus)
  docker tier    the tests marked #[ignore = "needs docker"] or "needs redis-server": real engine,
                 real redis-server, real docker compose (`cargo test -- --ignored`)
  --unit         the unit tier only (alias --fast); installs nothing, needs no Docker
  --no-install   do not apt-get install missing tools; fail naming them instead
  --first-run    first prove the README's first command on a fresh machine: remove the stack's
                 images, the packages it installs and the compose v2 plugin, run
                 scripts/local-up.sh (standalone) and scripts/local-down.sh (default when CI=true)
Needs: a Docker daemon (started when it is not running and this runs as root), cargo; installs redis-server, shellcheck and
busybox-static with apt-get when they are missing and it runs as root.
USAGE
}

install=1
unit_only=0
first_run="${CI:+1}"
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --no-install) install=0 ;;
    --first-run) first_run=1 ;;
    --unit|--fast) unit_only=1 ;;
    *) echo "test.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."

# shellcheck source=lib.sh disable=SC1091
. scripts/lib.sh

command -v cargo >/dev/null || die "cargo is not installed; install Rust (rustup) first"

# The unit tier's tests: everything `cargo test` runs without --ignored.
unit_tests() {
  local t0=$SECONDS
  cargo test --workspace -q
  echo "test.sh: unit tier tests: $(( SECONDS - t0 ))s"
}

# The docker tier: the ignored tests of every test binary, in three chains side by side (these
# tests wait on Docker far more than they compute): the build agent's deploys then its isolation
# tests (they build on the same image layers, and one's image cleanup must not race the other's
# build); the stack's journey; every other binary, one after another.
# Each binary's output goes to a file and is printed when it fails; the binaries run from their
# package's folder, as cargo runs them.
docker_tier() {
  local logs t0 rc=0 name chain
  logs="$(mktemp -d)"
  t0=$SECONDS
  cargo test --workspace --no-run -q --message-format=json \
    | jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
             | "\(.target.name) \(.executable) \(.manifest_path)"' | sort -u >"$logs/binaries"
  [ -s "$logs/binaries" ] || die "cargo listed no test binaries"
  local first=(deploy isolation) second=(stack_e2e) rest=()
  while read -r name _; do
    case " ${first[*]} ${second[*]} " in *" $name "*) ;; *) rest+=("$name") ;; esac
  done <"$logs/binaries"
  local chains=()
  run_chain "$logs" "${first[@]}" & chains+=($!)
  run_chain "$logs" "${second[@]}" & chains+=($!)
  run_chain "$logs" "${rest[@]}" & chains+=($!)
  for chain in "${chains[@]}"; do wait "$chain" || rc=1; done
  echo "test.sh: docker tier tests: $(( SECONDS - t0 ))s"
  [ "$rc" = 0 ] || die "the docker tier failed (each failing binary's output is above; logs in $logs)"
  rm -rf "$logs"
}

# Run the named test binaries' ignored tests one after another; a line each, the output on failure.
run_chain() {
  local logs="$1" name exe manifest t0 rc=0 summary
  shift
  for name in "$@"; do
    read -r _ exe manifest < <(grep "^$name " "$logs/binaries" | head -n 1) \
      || die "no test binary named $name (was a test file renamed? see scripts/test.sh)"
    t0=$SECONDS
    if (cd "$(dirname "$manifest")" && "$exe" --ignored -q --test-threads="${TEST_THREADS:-4}") \
        >"$logs/$name.log" 2>&1; then
      summary="$(grep -o '[0-9]* passed' "$logs/$name.log" | tail -n 1)"
      echo "    $name: ${summary:-0 passed} in $(( SECONDS - t0 ))s"
    else
      rc=1
      echo "---- $name FAILED after $(( SECONDS - t0 ))s; its output:"
      cat "$logs/$name.log"
    fi
  done
  return "$rc"
}

if [ "$unit_only" = 1 ]; then
  echo "== unit tier: cargo fmt --check, clippy, the tests that need no Docker or Redis"
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -q -- -D warnings
  unit_tests
  echo "test.sh: the unit tier is green (scripts/test.sh runs the docker tier too)"
  exit 0
fi

ensure_docker_daemon

# The README's first command, from what a fresh machine has: none of the stack's images, none of
# the packages it installs itself, no compose v2 plugin.
if [ "${first_run:-}" = 1 ]; then
  echo "== first run of scripts/local-up.sh on a fresh machine"
  for img in registry-sidecar build-agent agent-base kong-emulator backend-standin redis; do
    docker rmi -f "nasiko/$img:local" >/dev/null 2>&1 || true
  done
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -q busybox-static redis-server >/dev/null 2>&1 || true
  fi
  rm -f "$HOME/.docker/cli-plugins/docker-compose" "${NASIKO_CACHE:-$HOME/.cache/nasiko}/docker-compose-v2"
  first_env="$(mktemp -d)/env"
  t0=$(date +%s)
  scripts/local-up.sh --standalone --env-file "$first_env"
  echo "test.sh: the first run of local-up.sh took $(( $(date +%s) - t0 ))s"
  curl -fsS -m 5 "http://localhost:9101/" >/dev/null || die "the first run's gateway does not answer"
  t0=$(date +%s)
  scripts/local-up.sh --standalone --env-file "$first_env" >/dev/null
  echo "test.sh: a second run took $(( $(date +%s) - t0 ))s"
  scripts/local-down.sh --volumes --yes --env-file "$first_env"
  rm -rf "$(dirname "$first_env")"
fi

if [ "$install" = 1 ]; then
  ensure_packages redis-server:redis-server shellcheck:shellcheck busybox:busybox-static \
    docker-compose:docker-compose jq:jq curl:curl ss:iproute2
else
  for c in redis-server shellcheck busybox docker-compose jq curl ss; do
    command -v "$c" >/dev/null || die "missing: $c (run without --no-install, or install it)"
  done
fi

# compose v2 (the docker compose plugin) beside v1: the build agent is tested with both
install_compose_v2 || die "cannot install the compose v2 plugin (see above); the v2 tests need it"

# Builds interrupted or failed on purpose by the tests leave dangling intermediate images; remove
# those built on the test base image (their parent chain reaches it) when the suite ends, so
# nothing else on the machine is touched and no build still running is disturbed.
remove_dangling_test_images() {
  local base img cur parent
  base="$(docker image inspect --format '{{.Id}}' nasiko-test-busybox:1 2>/dev/null)" || return 0
  for img in $(docker images -q --no-trunc --filter dangling=true); do
    cur="$img"
    for _ in $(seq 1 64); do
      parent="$(docker image inspect --format '{{.Parent}}' "$cur" 2>/dev/null)" || break
      [ -n "$parent" ] || break
      if [ "$parent" = "$base" ]; then docker rmi "$img" >/dev/null 2>&1 || true; break; fi
      cur="$parent"
    done
  done
}
trap remove_dangling_test_images EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== shellcheck"
shellcheck -x scripts/*.sh .ci/run
echo "== docker compose config (stack files, v1 and v2)"
scripts/check-compose.sh
echo "== runtime images from host binaries (used by the stack and end-to-end tests)"
scripts/build-images.sh
echo "== cargo build (once, reused by every test)"
cargo build --workspace --all-targets -q
echo "== unit tier"
unit_tests
echo "== docker tier (real engine, redis-server, docker compose)"
docker_tier
echo "test.sh: all green"

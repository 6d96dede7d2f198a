#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs (redis-server, the
# ShellCheck linter, busybox-static), checks the Docker daemon, then fmt, clippy, ShellCheck and
# every test of the workspace (real Docker engine, real redis-server, real docker compose).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/test.sh [--no-install] [--fast]

Runs formatting and lint checks and the whole test suite of the workspace.
  --fast         the fast tier: fmt, clippy and the tests that need no Docker engine, Redis or
                 images (unit tests, the Kong emulator's conformance, the Kubernetes discovery,
                 the build agent's commands and its hostile corpus); about a minute once built
  --no-install   do not apt-get install missing tools; fail naming them instead
  --first-run    first prove the README's first command on a fresh machine: remove the stack's
                 images, the packages it installs and the compose v2 plugin, run
                 scripts/local-up.sh (standalone) and scripts/local-down.sh (default when CI=true)
Needs: a reachable Docker daemon, cargo; installs redis-server, shellcheck and
busybox-static with apt-get when they are missing and it runs as root.
USAGE
}

install=1
fast=0
first_run="${CI:+1}"
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --no-install) install=0 ;;
    --first-run) first_run=1 ;;
    --fast) fast=1 ;;
    *) echo "test.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."

# shellcheck source=lib.sh disable=SC1091
. scripts/lib.sh

command -v cargo >/dev/null || die "cargo is not installed; install Rust (rustup) first"

if [ "$fast" = 1 ]; then
  echo "== fast tier: cargo fmt --check, clippy, tests without Docker"
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -q -- -D warnings
  cargo test --workspace -q --lib --bins
  cargo test -q -p nasiko-tests --test kong_conformance
  cargo test -q -p registry-sidecar --test k8s_discovery
  cargo test -q -p build-agent --test cli
  echo "test.sh: the fast tier is green (scripts/test.sh runs everything)"
  exit 0
fi

check_docker

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
echo "== cargo test"
cargo test --workspace -q -- --test-threads="${TEST_THREADS:-4}"
echo "test.sh: all green"

#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs (redis-server,
# shellcheck, busybox-static), checks the Docker daemon, then fmt, clippy, shellcheck and
# every test of the workspace (real Docker engine, real redis-server, real docker compose).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/test.sh [--no-install]

Runs formatting and lint checks and the whole test suite of the workspace.
  --no-install   do not apt-get install missing tools; fail naming them instead
Needs: a reachable Docker daemon, cargo; installs redis-server, shellcheck and
busybox-static with apt-get when they are missing and it runs as root.
USAGE
}

install=1
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --no-install) install=0 ;;
    *) echo "test.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."

die() { echo "test.sh: $*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed; install Rust (rustup) first"
command -v docker >/dev/null || die "the docker CLI is not installed; install Docker Engine"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed); start it or set DOCKER_HOST"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v shellcheck >/dev/null || need+=(shellcheck)
[ -x /bin/busybox ] || command -v busybox >/dev/null || need+=(busybox-static)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$install" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; } \
      || die "could not apt-get install ${need[*]}; install them and re-run"
  else
    die "missing: ${need[*]} (install them, e.g. apt-get install -y ${need[*]})"
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== shellcheck"
shellcheck scripts/*.sh .ci/run
echo "== cargo build (once, reused by every test)"
cargo build --workspace --all-targets -q
echo "== cargo test"
cargo test --workspace -q -- --test-threads="${TEST_THREADS:-4}"
echo "test.sh: all green"

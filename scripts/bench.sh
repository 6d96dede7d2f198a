#!/usr/bin/env bash
# Runs every benchmark and prints the numbers for this machine: the sidecar (start -> route
# latency, sync costs, RSS), the build agent (job lifecycle, resume, deploy times) and the end to
# end stack (queued -> answering, writes at rest, RSS, image sizes) and the scale bench
# (BENCH_AGENTS agents, 200 by default, each on a network of its own). About half an hour.
# --peer: upstream's Python registry from a Nasiko checkout beside our sidecar (tests/benches/peer.rs).
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/bench.sh                      every benchmark (about half an hour)
       scripts/bench.sh --peer [CHECKOUT]    upstream's Python registry beside registry-sidecar

--peer runs agent-gateway/registry/registry.py from your own Nasiko checkout (CHECKOUT, else
NASIKO_CHECKOUT) in a venv made from its requirements.txt (pip, with this machine's package
index settings; kept in ~/.cache/nasiko-local), beside the release registry-sidecar: each against
a Kong emulator of its own, both watching the same agent containers on one Docker network, each
at its default interval. About 8 minutes. Without a checkout it says what it needs and skips.
Needs what scripts/test.sh installs.
USAGE
}
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh disable=SC1091
. scripts/lib.sh
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --peer)
    checkout="${2:-${NASIKO_CHECKOUT:-}}"
    registry="${checkout:+$checkout/agent-gateway/registry}"
    if [ -z "$checkout" ] || [ ! -f "$registry/registry.py" ] || [ ! -f "$registry/requirements.txt" ]; then
      echo "bench.sh --peer: skipped: it needs a Nasiko checkout with agent-gateway/registry/registry.py and its requirements.txt; give its path (scripts/bench.sh --peer ~/src/nasiko) or set NASIKO_CHECKOUT"
      exit 0
    fi
    command -v python3 >/dev/null || die "python3 is missing; the Python registry needs it (3.11, as its Dockerfile)"
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/nasiko-local/peer-venv-$(md5sum <"$registry/requirements.txt" | cut -c1-12)"
    if [ ! -x "$venv/bin/python" ]; then
      say "making a venv for the Python registry from its requirements.txt ($venv)"
      python3 -m venv "$venv.tmp" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
      "$venv.tmp/bin/pip" install -q -r "$registry/requirements.txt" || die "pip install -r $registry/requirements.txt failed (see above)"
      mv "$venv.tmp" "$venv"
    fi
    echo "machine: $(nproc) cores, Docker $(docker version --format '{{.Server.Version}}'), $(date -u +%Y-%m-%d); checkout: $(git -C "$checkout" rev-parse --short HEAD 2>/dev/null || echo "$checkout (not a git work tree)")"
    cargo build --release -q -p registry-sidecar
    PEER_CHECKOUT="$checkout" PEER_PYTHON="$venv/bin/python" \
      cargo bench -q -p nasiko-tests --bench peer 2>&1 | grep -vE '^(running|test |test result|$)'
    exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), Docker $(docker version --format '{{.Server.Version}}'), $(date -u +%Y-%m-%d)"
scripts/build-images.sh
cargo bench -q -p registry-sidecar -p build-agent -p nasiko-tests 2>&1 | grep -vE '^(running|test |test result|$)'

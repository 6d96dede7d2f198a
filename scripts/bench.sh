#!/usr/bin/env bash
# Runs every benchmark and prints the numbers for this machine: the sidecar (start -> route
# latency, sync costs, RSS), the build agent (job lifecycle, resume, deploy times) and the end to
# end stack (queued -> answering, writes at rest, RSS, image sizes) and the scale bench
# (BENCH_AGENTS agents, 200 by default, each on a network of its own). About half an hour.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "Usage: scripts/bench.sh   (needs what scripts/test.sh installs; builds release binaries and images)"
  exit 0
fi
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), Docker $(docker version --format '{{.Server.Version}}'), $(date -u +%Y-%m-%d)"
scripts/build-images.sh
cargo bench -q -p registry-sidecar -p build-agent -p nasiko-tests 2>&1 | grep -vE '^(running|test |test result|$)'

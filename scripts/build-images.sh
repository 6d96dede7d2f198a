#!/usr/bin/env bash
# Builds the project's runtime images.
#   default (a host without a registry, like CI): from host-built release binaries, on an empty
#            base (FROM scratch): the binary, its shared libraries, busybox, and what each needs
#            (curl for the sidecar health check; the Docker CLI and compose v2 for the worker).
#   --dockerfile: the multi-stage Dockerfiles (needs a registry for rust and debian images).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/build-images.sh [--dockerfile] [--only NAME[,NAME]] [--tag TAG]

Builds: registry-sidecar, build-agent (the two daemons), agent-base (the base of
examples/hello-agent) and, for the standalone stack, kong-emulator, backend-standin and redis
(stand-ins made from host binaries).
  --dockerfile   use registry-sidecar/Dockerfile and build-agent/Dockerfile (internet needed)
  --only LIST    comma-separated subset of the names above
  --tag TAG      image tag (default: $NASIKO_LOCAL_TAG or "local"); images are nasiko/NAME:TAG
Env: NASIKO_CACHE (default ~/.cache/nasiko) keeps the downloaded compose v2 plugin.
USAGE
}

mode=host
only=""
tag="${NASIKO_LOCAL_TAG:-local}"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dockerfile) mode=dockerfile ;;
    --only) only="$2"; shift ;;
    --tag) tag="$2"; shift ;;
    *) echo "build-images.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
# shellcheck source=lib.sh disable=SC1091
. scripts/lib.sh
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# Copy the shared libraries of binary $2 into the root $1, at their host paths.
copy_libs() {
  local lib
  while read -r lib; do
    [ -n "$lib" ] && [ -e "$lib" ] && install -D -m 0755 "$(readlink -f "$lib")" "$1$lib"
  done < <(ldd "$2" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

# Copy host binaries (same paths) and their libraries into the root $1.
copy_with_libs() {
  local root="$1" bin; shift
  for bin in "$@"; do
    install -D -m 0755 "$bin" "$root$bin"
    copy_libs "$root" "$bin"
  done
}

# Install a project binary at /usr/local/bin in root $1, with its libraries.
install_project_bin() {
  install -D -m 0755 "target/release/$2" "$1/usr/local/bin/$2"
  copy_libs "$1" "target/release/$2"
}

# The host's iptables (nftables flavour) with the extensions the agent guard uses (physdev,
# comment), as /usr/local/bin/iptables in the root $1: `build-agent guard` runs it.
add_iptables() {
  local root="$1" bin ext
  bin="$(command -v xtables-nft-multi || true)"
  [ -n "$bin" ] || die "iptables (nftables flavour, xtables-nft-multi) is missing; install it (apt-get install -y iptables)"
  copy_with_libs "$root" "$bin"
  ln -sf "$bin" "$root/usr/local/bin/iptables"
  ext="$(dirname "$(readlink -f "$(ldconfig -p | awk '/libxtables\.so\./ {print $NF; exit}')")")/xtables"
  [ -d "$ext" ] || die "iptables' extensions are not in $ext"
  for so in "$ext"/libxt_physdev.so "$ext"/libxt_comment.so "$ext"/libxt_standard.so "$ext"/libipt_*.so; do
    [ -e "$so" ] && copy_with_libs "$root" "$so"
  done
}

# A root with busybox, /tmp and a non-root user 10001.
base_root() {
  local root="$1"
  mkdir -p "$root"/{bin,etc,tmp,usr/local/bin}
  chmod 1777 "$root/tmp"
  local bb; bb="$(command -v busybox || true)"
  [ -n "$bb" ] || die "busybox is missing (apt-get install -y busybox-static)"
  install -m 0755 "$bb" "$root/bin/busybox"
  for applet in sh ash ls cat echo printf sleep wget nc ps kill mkdir rm cp env grep sed tr dd head true false test id chmod; do
    ln -sf /bin/busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnasiko:x:10001:10001:nasiko:/tmp:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnasiko:x:10001:\n' > "$root/etc/group"
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
}

# docker build FROM scratch with a generated Dockerfile; $1 name, $2 root, $3.. Dockerfile lines.
image_from_root() {
  local name="$1" root="$2"; shift 2
  { echo "FROM scratch"; echo "COPY . /"; printf '%s\n' "$@"; } > "$root/Dockerfile"
  local log old; log="$(mktemp)"
  old="$(docker image inspect --format '{{.Id}}' "nasiko/$name:$tag" 2>/dev/null || true)"
  if ! docker build -q --force-rm -t "nasiko/$name:$tag" -f "$root/Dockerfile" "$root" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    die "docker build of nasiko/$name:$tag failed"
  fi
  rm -f "$log"
  # the replaced image, now untagged, is ours to remove
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect --format '{{.Id}}' "nasiko/$name:$tag")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  echo "built nasiko/$name:$tag ($(docker image inspect --format '{{.Size}}' "nasiko/$name:$tag" | awk '{printf "%.1f MB", $1/1e6}'))"
}

if [ "$mode" = dockerfile ]; then
  wanted registry-sidecar && docker build -t "nasiko/registry-sidecar:$tag" -f registry-sidecar/Dockerfile .
  wanted build-agent && docker build -t "nasiko/build-agent:$tag" -f build-agent/Dockerfile .
  exit 0
fi

check_docker

bins=(registry-sidecar build-agent kong-emulator backend-standin)
if [ -z "${NASIKO_SKIP_CARGO:-}" ]; then
  # not quiet: on a fresh machine this compiles for minutes, and says what it is compiling
  echo "build-images.sh: cargo build --release (a few minutes the first time)" >&2
  if ! cargo build --release -p registry-sidecar -p build-agent -p nasiko-tests --bins 2>&1 \
    | { grep --line-buffered -E '^ *(Compiling|Finished|error)' >&2 || true; }; then
    die "cargo build --release failed; run it by hand to see why"
  fi
fi
for b in "${bins[@]}"; do
  [ -x "target/release/$b" ] || die "target/release/$b is missing; run cargo build --release"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if wanted registry-sidecar; then
  r="$work/registry-sidecar"; base_root "$r"
  copy_with_libs "$r" "$(command -v curl || die 'curl is missing on the host')"
  install_project_bin "$r" registry-sidecar
  install -D -m 0644 compose-templates/static-routes.yml "$r/etc/nasiko/static-routes.yml"
  image_from_root registry-sidecar "$r" \
    'ENV LISTEN_ADDR=0.0.0.0:8080 STATIC_ROUTES_FILE=/etc/nasiko/static-routes.yml PATH=/usr/local/bin:/usr/bin:/bin' \
    'EXPOSE 8080' \
    'HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["curl", "-fsS", "-o", "/dev/null", "http://localhost:8080/health"]' \
    'ENTRYPOINT ["/usr/local/bin/registry-sidecar"]'
fi

if wanted build-agent; then
  r="$work/build-agent"; base_root "$r"
  copy_with_libs "$r" "$(command -v docker)"
  install -D -m 0755 "$(compose_plugin)" "$r/usr/libexec/docker/cli-plugins/docker-compose"
  install_project_bin "$r" build-agent
  add_iptables "$r"
  mkdir -p "$r/var/lib/nasiko-build-agent" "$r/app/agents"
  image_from_root build-agent "$r" \
    'ENV PATH=/usr/local/bin:/usr/bin:/bin COMPOSE_FLAVOR=v2 WORK_DIR=/var/lib/nasiko-build-agent' \
    'ENTRYPOINT ["/usr/local/bin/build-agent"]' 'CMD ["run"]'
fi

if wanted agent-base; then
  # a base for agents on hosts without a registry (examples/hello-agent): busybox and /app
  r="$work/agent-base"; base_root "$r"
  mkdir -p "$r/app"
  # agents on it put an executable /app/agent.sh: it answers one HTTP request per connection
  image_from_root agent-base "$r" 'WORKDIR /app' 'EXPOSE 5000' 'CMD ["nc", "-ll", "-p", "5000", "-e", "/app/agent.sh"]'
fi

if wanted kong-emulator; then
  r="$work/kong-emulator"; base_root "$r"
  install_project_bin "$r" kong-emulator
  image_from_root kong-emulator "$r" \
    'ENV EMULATOR_ADMIN_LISTEN=0.0.0.0:8001 EMULATOR_PROXY_LISTEN=0.0.0.0:8000' 'USER 10001:10001' 'EXPOSE 8000 8001' \
    'HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8001/status"]' \
    'ENTRYPOINT ["/usr/local/bin/kong-emulator"]'
fi

if wanted backend-standin; then
  r="$work/backend-standin"; base_root "$r"
  install_project_bin "$r" backend-standin
  image_from_root backend-standin "$r" \
    'ENV STANDIN_LISTEN=0.0.0.0:8000' 'USER 10001:10001' 'EXPOSE 8000' \
    'HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/health"]' \
    'ENTRYPOINT ["/usr/local/bin/backend-standin"]'
fi

if wanted redis; then
  command -v redis-server >/dev/null || die "redis-server is missing on the host (apt-get install -y redis-server)"
  r="$work/redis"; base_root "$r"
  copy_with_libs "$r" "$(command -v redis-server)" "$(command -v redis-cli)"
  mkdir -p "$r/data" && chmod 0777 "$r/data"
  image_from_root redis "$r" \
    'USER 10001:10001' 'EXPOSE 6379' 'VOLUME /data' \
    'HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["redis-cli", "ping"]' \
    'ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--appendonly", "yes", "--dir", "/data"]'
fi

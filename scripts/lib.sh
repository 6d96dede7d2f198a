#!/usr/bin/env bash
# Shared helpers of the local-* scripts: messages, compose detection, env file loading.
# shellcheck disable=SC2034  # variables are used by the scripts that source this file

die() { echo "${0##*/}: $*" >&2; exit 1; }
say() { echo "==> $*"; }

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Sets COMPOSE (an array): the v2 plugin if present, else docker-compose v1.
find_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    die "neither 'docker compose' (v2 plugin) nor 'docker-compose' (v1) is installed; install one, e.g. apt-get install -y docker-compose"
  fi
}

check_docker() {
  command -v docker >/dev/null || die "the docker CLI is not installed; install Docker Engine"
  docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed); start it (systemctl start docker) or set DOCKER_HOST"
}

# Export the settings of an env file (KEY=VALUE lines) into this shell.
load_env() {
  local f="$1" line key
  [ -f "$f" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    key="${line%%=*}"
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    # the environment wins over the file
    if [ -z "${!key+x}" ]; then export "${line?}"; fi
  done < "$f"
}

cache="${NASIKO_CACHE:-$HOME/.cache/nasiko}"
compose_deb_url="http://deb.debian.org/debian/pool/main/d/docker-compose/docker-compose_2.26.1-4_amd64.deb"
compose_deb_sha="47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea"

# The compose v2 CLI plugin (a static Go binary) from Debian trixie's docker-compose package.
compose_plugin() {
  local out="$cache/docker-compose-v2.26.1"
  if [ ! -x "$out" ]; then
    mkdir -p "$cache"
    local deb="$cache/docker-compose_2.26.1-4_amd64.deb"
    if [ ! -f "$deb" ] || ! echo "$compose_deb_sha  $deb" | sha256sum -c --quiet - 2>/dev/null; then
      echo "fetching the compose v2 plugin from deb.debian.org" >&2
      curl -fsS -m 300 -o "$deb.part" "$compose_deb_url" || die "cannot download $compose_deb_url (needed for the worker image)"
      mv "$deb.part" "$deb"
      echo "$compose_deb_sha  $deb" | sha256sum -c --quiet - || die "checksum mismatch for $deb"
    fi
    local tmp; tmp="$(mktemp -d)"
    dpkg-deb -x "$deb" "$tmp"
    install -m 0755 "$tmp/usr/libexec/docker/cli-plugins/docker-compose" "$out"
    rm -rf "$tmp"
  fi
  echo "$out"
}

# Make `docker compose` (v2) available to this user, from the cached Debian package.
install_compose_v2() {
  docker compose version >/dev/null 2>&1 && return 0
  local plugin
  plugin="$(compose_plugin)" || return 1
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 0755 "$plugin" "$HOME/.docker/cli-plugins/docker-compose"
}

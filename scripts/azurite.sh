#!/usr/bin/env bash
# Azurite (Microsoft's Azure Storage emulator, from npm) for the Azure Blob tests.
#
#   scripts/azurite.sh install              # npm install into .azurite/ (git-ignored); idempotent
#   scripts/azurite.sh run PORT LOCATION    # install if missing, then exec the blob service in the
#                                           # foreground on 127.0.0.1:PORT, data in LOCATION
#
# `run` execs node, so the caller's PID is the server's: the pytest fixture stops it by that PID.
# The access log (one line per request) goes to stdout. Override the version with AZURITE_VERSION.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${QUAMOTION_AZURITE_DIR:-$ROOT/.azurite}"
VERSION="${AZURITE_VERSION:-3.35.0}"
BIN="$PREFIX/node_modules/.bin/azurite-blob"

install() {
  if [ -x "$BIN" ] && [ -f "$PREFIX/.version-$VERSION" ]; then return 0; fi
  command -v npm >/dev/null 2>&1 || {
    echo "npm is not installed: run 'make system-deps' as root (or apt-get install nodejs npm)." >&2
    exit 1
  }
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error "azurite@$VERSION" >&2
  rm -f "$PREFIX"/.version-*
  touch "$PREFIX/.version-$VERSION"
}

case "${1:-}" in
  install)
    install
    ;;
  run)
    [ $# -eq 3 ] || { echo "usage: $0 run PORT LOCATION" >&2; exit 2; }
    install
    mkdir -p "$3"
    exec "$BIN" --blobHost 127.0.0.1 --blobPort "$2" --location "$3" --skipApiVersionCheck --loose --disableTelemetry \
      --disableProductStyleUrl
    ;;
  *)
    echo "usage: $0 install|run PORT LOCATION" >&2
    exit 2
    ;;
esac

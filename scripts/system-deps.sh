#!/usr/bin/env bash
# System packages the tests need (Debian): installed when missing and we are root (CI is root).
set -euo pipefail
need=()
# Packages are added here by the features that need them (PostgreSQL for the SQL export tests, ...).
for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "Missing system packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

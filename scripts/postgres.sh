#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the SQL export tests, from Debian's packages
# (`make system-deps` installs `postgresql`).
#
#   scripts/postgres.sh start   # idempotent; prints the connection URI (postgresql://...)
#   scripts/postgres.sh uri     # prints the URI without starting anything
#   scripts/postgres.sh stop    # idempotent
#   scripts/postgres.sh status  # exit 0 when the server is running, 3 when not
#   scripts/postgres.sh pid     # prints the server's PID (exit 3 when it is not running)
#
# The cluster lives in $QUAMOTION_PG_DIR (default: $TMPDIR/quamotion-pg), listens on 127.0.0.1 only,
# port $QUAMOTION_PG_PORT (default 55432), trusts loopback connections (a test server, no secrets).
# As root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail

PORT="${QUAMOTION_PG_PORT:-55432}"
DIR="${QUAMOTION_PG_DIR:-${TMPDIR:-/tmp}/quamotion-pg}"
DATA="$DIR/data"
URI="postgresql://postgres@127.0.0.1:${PORT}/postgres"

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$found" ] && command -v pg_config >/dev/null 2>&1; then found=$(pg_config --bindir); fi
  if [ -z "$found" ] || [ ! -x "$found/pg_ctl" ]; then
    echo "PostgreSQL is not installed: run 'make system-deps' as root (or apt-get install postgresql)." >&2
    exit 1
  fi
  echo "$found"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi
}

running() {
  [ -s "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

case "${1:-}" in
  start)
    BIN=$(bindir)
    if ! running; then
      mkdir -p "$DIR"
      if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR"; fi
      if [ ! -s "$DATA/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 \
          || { cat "$DIR/initdb.log" >&2; exit 1; }
      fi
      as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
        -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" start >/dev/null \
        || { tail -20 "$DIR/server.log" >&2; exit 1; }
    fi
    echo "$URI"
    ;;
  stop)
    BIN=$(bindir)
    if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; fi
    ;;
  status)
    BIN=$(bindir)
    if running; then echo "running: $URI"; else echo "stopped"; exit 3; fi
    ;;
  pid)
    BIN=$(bindir)
    if running; then head -1 "$DATA/postmaster.pid"; else exit 3; fi
    ;;
  uri)
    echo "$URI"
    ;;
  *)
    echo "usage: $0 start|stop|status|pid|uri" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# A throwaway MariaDB server on loopback for the SQL export tests, from Debian's packages
# (`make system-deps` installs `mariadb-server`). The same interface as scripts/postgres.sh:
#
#   scripts/mariadb.sh start   # idempotent; prints the connection URI (mysql://...)
#   scripts/mariadb.sh uri     # prints the URI without starting anything
#   scripts/mariadb.sh pid     # prints the server's PID (exit 3 when it is not running)
#   scripts/mariadb.sh stop    # idempotent; returns once the server's process is gone
#   scripts/mariadb.sh status  # exit 0 when the server is running, 3 when not
#
# The server lives in $QUAMOTION_MARIADB_DIR (default: $TMPDIR/quamotion-mariadb), listens on
# 127.0.0.1 only, port $QUAMOTION_MARIADB_PORT (default 53306); user `quamotion` without a password,
# from 127.0.0.1 only (a test server, no secrets). As root the server runs as the `mysql` user.
set -euo pipefail

PORT="${QUAMOTION_MARIADB_PORT:-53306}"
DIR="${QUAMOTION_MARIADB_DIR:-${TMPDIR:-/tmp}/quamotion-mariadb}"
DATA="$DIR/data"
SOCK="$DIR/mysqld.sock"
PIDFILE="$DIR/mariadbd.pid"
URI="mysql://quamotion@127.0.0.1:${PORT}/quamotion"

need() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    echo "MariaDB is not installed: run 'make system-deps' as root (or apt-get install mariadb-server)." >&2
    exit 1
  fi
}

server_pid() {
  local pid
  [ -s "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

client() { mariadb --no-defaults -S "$SOCK" -u root "$@"; }

case "${1:-}" in
  start)
    need
    if ! server_pid >/dev/null; then
      # the server's own temporary directory: $TMPDIR may not be writable by the mysql user (as root)
      mkdir -p "$DIR/tmp"
      user_opt=()
      if [ "$(id -u)" = 0 ]; then chown mysql: "$DIR" "$DIR/tmp"; user_opt=(--user=mysql); fi
      export TMPDIR="$DIR/tmp"
      if [ ! -d "$DATA/mysql" ]; then
        mariadb-install-db --no-defaults "${user_opt[@]}" --datadir="$DATA" --auth-root-authentication-method=normal \
          --skip-test-db >"$DIR/install.log" 2>&1 || { cat "$DIR/install.log" >&2; exit 1; }
      fi
      (cd / && exec /usr/sbin/mariadbd --no-defaults "${user_opt[@]}" --datadir="$DATA" --socket="$SOCK" \
        --port="$PORT" --bind-address=127.0.0.1 --pid-file="$PIDFILE" --log-error="$DIR/server.log" --tmpdir="$DIR/tmp" \
        --skip-name-resolve --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=64M \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_bin --default-time-zone=+00:00 \
        </dev/null >/dev/null 2>&1 &)
      for _ in $(seq 1 600); do
        if client -e "SELECT 1" >/dev/null 2>&1; then break; fi
        sleep 0.1
      done
      client -e "SELECT 1" >/dev/null 2>&1 || { tail -20 "$DIR/server.log" >&2; exit 1; }
      client -e "CREATE DATABASE IF NOT EXISTS quamotion; CREATE USER IF NOT EXISTS 'quamotion'@'127.0.0.1';
        GRANT ALL ON *.* TO 'quamotion'@'127.0.0.1'; FLUSH PRIVILEGES;"
    fi
    echo "$URI"
    ;;
  stop)
    need
    if pid=$(server_pid); then
      client -e "SHUTDOWN" >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; sleep 0.5; fi
    fi
    ;;
  pid)
    server_pid || exit 3
    ;;
  status)
    need
    if server_pid >/dev/null; then echo "running: $URI"; else echo "stopped"; exit 3; fi
    ;;
  uri)
    echo "$URI"
    ;;
  *)
    echo "usage: $0 start|stop|status|pid|uri" >&2
    exit 2
    ;;
esac

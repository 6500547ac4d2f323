#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the scale-out tests and benchmarks.
#   scripts/pg_local.sh start   -> prints postgresql://cortex@127.0.0.1:PORT/cortex
#   scripts/pg_local.sh stop
# One cluster per checkout, in /tmp (the `postgres` user must reach it) on a port derived
# from the checkout's path, so two checkouts' test runs do not meet: trust auth,
# 127.0.0.1 only, fsync on. PostgreSQL refuses to run as root, so as root it runs as the
# `postgres` user of Debian's package.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
key="$(printf '%s' "$root" | cksum | cut -d' ' -f1)"
dir="${CORTEX_PG_DIR:-/tmp/cortex-pg-$key}"
port="${CORTEX_PG_PORT:-$((54000 + key % 1000))}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$bin" ] || { echo "pg_local: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
case "${1:-}" in
  start)
    if [ ! -f "$dir/PG_VERSION" ]; then
      mkdir -p "$dir"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
      as "$bin/initdb" -D "$dir" -U cortex --auth=trust -E UTF8 >/dev/null
    fi
    if ! as "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      as "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir' -c max_connections=200" start >/dev/null
    fi
    as "$bin/psql" -h 127.0.0.1 -p "$port" -U cortex -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='cortex'" | grep -q 1 ||
      as "$bin/createdb" -h 127.0.0.1 -p "$port" -U cortex cortex
    echo "postgresql://cortex@127.0.0.1:$port/cortex"
    ;;
  stop)
    [ -f "$dir/PG_VERSION" ] && as "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

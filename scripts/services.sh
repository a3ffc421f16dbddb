#!/usr/bin/env bash
# services.sh install|start|stop|status
#
# Runs the services Triad's tests and benchmarks need, privately, on loopback, without
# systemd (CI and dev machines have none). Each service has its own install_/start_/stop_/
# status_ functions; to add one (RabbitMQ, Mosquitto), write those four and list it in
# SERVICES below.
#
# Environment:
#   TRIAD_SVC_DIR   where the services keep their data    (default /tmp/triad-services)
#   TRIAD_PG_PORT   PostgreSQL port on 127.0.0.1          (default 55432, not 5432: the
#                   machine may run its own cluster there)
set -euo pipefail

SVC_DIR=${TRIAD_SVC_DIR:-/tmp/triad-services}
PG_PORT=${TRIAD_PG_PORT:-55432}
PG_DIR=$SVC_DIR/pg
PG_DB=triad_test
SERVICES=(pg)

die() { echo "services.sh: error: $*" >&2; exit 1; }
log() { echo "services.sh: $*"; }

# --- shared helpers -------------------------------------------------------------------

# apt-get update is slow; run it at most once per invocation, and only if something is missing.
APT_UPDATED=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "installing $*"
  apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# --- PostgreSQL -----------------------------------------------------------------------

# Newest installed server version's bin dir (Debian keeps them under /usr/lib/postgresql/N/bin).
pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && [ -x "$d/initdb" ] || die "PostgreSQL is not installed (run: $0 install)"
  echo "$d"
}

# PostgreSQL refuses to run as root, so everything server-side runs as user postgres.
as_pg() { runuser -u postgres -- "$@"; }

# psql over the private unix socket: local auth is trust, so no password is needed here.
pg_psql() { as_pg "$(pg_bin)/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

pg_running() {
  [ -f "$PG_DIR/data/PG_VERSION" ] || return 1
  as_pg "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

install_pg() {
  if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then return 0; fi
  apt_install postgresql
}

start_pg() {
  local bin; bin=$(pg_bin)
  mkdir -p "$PG_DIR"
  chown postgres:postgres "$PG_DIR"
  # The postgres user must be able to reach its data dir through every parent directory.
  as_pg test -w "$PG_DIR" || die "user postgres cannot write $PG_DIR (is a parent dir mode 700? set TRIAD_SVC_DIR)"

  if pg_running; then
    log "postgres already running in $PG_DIR/data"
  else
    if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
      # Password 'postgres' for TCP (scram, as a real deployment would use); trust on the socket.
      echo postgres > "$PG_DIR/pwfile"; chown postgres "$PG_DIR/pwfile"; chmod 600 "$PG_DIR/pwfile"
      as_pg "$bin/initdb" -D "$PG_DIR/data" -U postgres --pwfile="$PG_DIR/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
        >"$PG_DIR/initdb.log" 2>&1 || { tail -20 "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    # A port taken by someone else would make pg_ctl wait and then fail obscurely: say so up front.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then
      die "port $PG_PORT on 127.0.0.1 is already in use by another process (set TRIAD_PG_PORT)"
    fi
    # fsync=off: test data is throwaway, and it makes the suite much faster.
    if ! as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off" start >/dev/null; then
      tail -20 "$PG_DIR/server.log" >&2 || true
      die "postgres did not start (log: $PG_DIR/server.log)"
    fi
  fi

  # Ready means: a password login over TCP works, as the tests will do it.
  local i
  for i in $(seq 1 50); do
    PGPASSWORD=postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' \
      >/dev/null 2>&1 && break
    [ "$i" = 50 ] && die "postgres is not accepting password logins on 127.0.0.1:$PG_PORT"
    sleep 0.2
  done

  if [ "$(pg_psql -d postgres -c "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    pg_psql -d postgres -c "create database $PG_DB" >/dev/null || die "could not create database $PG_DB"
  fi
  log "postgres up: postgres://postgres:postgres@127.0.0.1:$PG_PORT/$PG_DB"
}

stop_pg() {
  if pg_running; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null || die "postgres did not stop"
    log "postgres stopped"
  else
    log "postgres not running"
  fi
}

status_pg() {
  if pg_running; then
    log "postgres running on 127.0.0.1:$PG_PORT (data $PG_DIR/data)"
  else
    log "postgres stopped"; return 1
  fi
}

# --- dispatch -------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and uses runuser)"

rc=0
case "${1:-}" in
  install) for s in "${SERVICES[@]}"; do "install_$s"; done ;;
  start)   for s in "${SERVICES[@]}"; do "start_$s"; done ;;
  # Stop in reverse order, so later services that may depend on earlier ones go first.
  stop)    for ((i=${#SERVICES[@]}-1; i>=0; i--)); do "stop_${SERVICES[i]}"; done ;;
  # Exit 3 when anything is down, like systemctl status.
  status)  for s in "${SERVICES[@]}"; do "status_$s" || rc=3; done ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
exit "$rc"

#!/usr/bin/env bash
# bench/replicas.sh — replicas on one PostgreSQL: 1, 2 and 3 `triad server`s behind HAProxy (TCP,
# round robin), each count measured through the balancer: reads by name and creates per second,
# and, with two or more, how long a write on one replica takes to be readable on another
# (`triad-bench propagation`: PUT on the first, GET on the second until its resourceVersion shows).
# Loopback only; every process shares the machine's cores. See bench/README.md.
#
# Knobs (environment):
#   BENCH_DURATION=10          seconds per read and per create case (wrk)
#   BENCH_COUNTS="1 2 3"       the numbers of servers to run
#   BENCH_PROPAGATION=300      writes timed for propagation
#   BENCH_SKIP_BUILD=1         reuse the existing release binaries
#   BENCH_TRIAD_BIN=PATH       run this triad (triad-bench is taken from the same directory)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK=$ROOT/bench/.work/replicas   # scratch, git-ignored
OUT=$WORK/out
RESULTS_DIR=$ROOT/bench/results
SERVICES=$ROOT/scripts/services.sh

PG_PORT=${TRIAD_PG_PORT:-55432}
DB=triad_bench_replicas
DB_URL=postgres://postgres:postgres@127.0.0.1:$PG_PORT/$DB
TOKEN=bench-admin-token-0123456789abcdef0123
BALANCER=127.0.0.1:18090
DURATION=${BENCH_DURATION:-10}
COUNTS=${BENCH_COUNTS:-1 2 3}
PROPAGATION=${BENCH_PROPAGATION:-300}
WRK_ARGS=(-t2 -c64 --latency)

[ "$(id -u)" = 0 ] || die "run as root (installs packages, runs PostgreSQL via runuser)"
pkgs=()
command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
command -v haproxy >/dev/null 2>&1 || pkgs+=(haproxy)
command -v curl >/dev/null 2>&1 || pkgs+=(curl)
apt_install_missing "${pkgs[@]}"
"$SERVICES" install pg
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

if [ -n "${BENCH_TRIAD_BIN:-}" ]; then
  TRIAD_BIN=$BENCH_TRIAD_BIN
else
  command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
  if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building triad and triad-bench (release)"
    swift build -c release --product triad >&2 && swift build -c release --product triad-bench >&2 || die "release build failed"
  fi
  TRIAD_BIN=$(swift build -c release --show-bin-path)/triad
fi
BENCH_BIN=$(dirname "$TRIAD_BIN")/triad-bench
[ -x "$TRIAD_BIN" ] || die "$TRIAD_BIN not found"
[ -x "$BENCH_BIN" ] || die "$BENCH_BIN not found (swift build -c release --product triad-bench)"

SERVER_PIDS=() BALANCER_PID=''
stop_all() {
  [ -z "$BALANCER_PID" ] || { kill "$BALANCER_PID" 2>/dev/null || true; wait "$BALANCER_PID" 2>/dev/null || true; }
  BALANCER_PID=
  for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SERVER_PIDS=()
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

addr_of() { echo "127.0.0.1:$((18090 + $1))"; }

# start_servers N — N servers on one fresh database, each answering /healthz.
start_servers() {
  local n=$1 i addr
  psql_tcp -d postgres -c "drop database if exists $DB with (force)" -c "create database $DB"
  for i in $(seq 1 "$n"); do
    addr=$(addr_of "$i")
    port_free "$addr" || die "$addr is already in use"
    mkdir -p "$WORK/r$i"
    TRIAD_ADMIN_TOKEN=$TOKEN "$TRIAD_BIN" server --database "$DB_URL" --data-dir "$WORK/r$i" --listen "$addr" \
      >"$WORK/logs/triad-$n-$i.log" 2>&1 &
    SERVER_PIDS+=($!)
  done
  for i in $(seq 1 "$n"); do
    addr=$(addr_of "$i")
    for _ in $(seq 1 300); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/healthz")" = 200 ] && break
      sleep 0.2
    done
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/healthz")" = 200 ] \
      || { tail -30 "$WORK/logs/triad-$n-$i.log" >&2; die "server $i of $n did not come up on $addr"; }
  done
  {
    echo "global"
    echo "  maxconn 4096"
    echo "defaults"
    echo "  mode tcp"
    echo "  timeout connect 5s"
    echo "  timeout client 60s"
    echo "  timeout server 60s"
    echo "frontend triad"
    echo "  bind $BALANCER"
    echo "  default_backend replicas"
    echo "backend replicas"
    echo "  balance roundrobin"
    for i in $(seq 1 "$n"); do echo "  server r$i $(addr_of "$i")"; done
  } >"$WORK/haproxy-$n.cfg"
  haproxy -f "$WORK/haproxy-$n.cfg" -db >"$WORK/logs/haproxy-$n.log" 2>&1 &
  BALANCER_PID=$!
  for _ in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$BALANCER/healthz")" = 200 ] && break
    sleep 0.1
  done
  log "$n server(s) up behind HAProxy on $BALANCER"
}

seed() {
  local i code
  for i in $(seq -f '%03g' 1 100); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      "http://$BALANCER/api/v1/resources" -d "$(resource_body "dev-$i")") || code=000
    [ "${code:0:1}" = 2 ] || die "seeding dev-$i answered $code"
  done
}

declare -A GET_RPS GET_P50 GET_P99 GET_ERR CREATE_RPS CREATE_P50 CREATE_P99 CREATE_ERR PROP
measure() {
  local n=$1
  wrk "${WRK_ARGS[@]}" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "http://$BALANCER/api/v1/resources/dev-001" \
    >"$OUT/get-$n.txt" 2>&1 || die "wrk failed (GET, $n servers)"
  read -r "GET_RPS[$n]" "GET_P50[$n]" "GET_P99[$n]" "GET_ERR[$n]" < <(parse_wrk "$OUT/get-$n.txt")
  BENCH_TOKEN=$TOKEN wrk "${WRK_ARGS[@]}" -d"${DURATION}s" -s "$WORK/create.lua" "http://$BALANCER" \
    >"$OUT/create-$n.txt" 2>&1 || die "wrk failed (create, $n servers)"
  read -r _ "CREATE_P50[$n]" "CREATE_P99[$n]" "CREATE_ERR[$n]" < <(parse_wrk "$OUT/create-$n.txt")
  CREATE_RPS[$n]=$(awk '/^CREATES_PER_SEC /{print $2}' "$OUT/create-$n.txt")
  log "$n server(s): GET ${GET_RPS[$n]}/s, creates ${CREATE_RPS[$n]}/s"
  if [ "$n" -ge 2 ]; then
    PROP[$n]=$("$BENCH_BIN" propagation --write "http://$(addr_of 1)" --read "http://$(addr_of 2)" --token "$TOKEN" \
      --count "$PROPAGATION") || die "propagation failed ($n servers)"
    log "$n server(s): propagation ${PROP[$n]}"
  fi
}

json_field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

rm -rf "$WORK"
mkdir -p "$WORK/logs" "$OUT"
write_create_lua "$WORK/create.lua"
"$SERVICES" start pg >&2
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for n in $COUNTS; do
  start_servers "$n"
  seed
  measure "$n"
  stop_all
done

mkdir -p "$RESULTS_DIR"
file=$RESULTS_DIR/replicas-$stamp.md
{
  echo "# Replicas on one PostgreSQL — $stamp"
  echo
  echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)')"
  echo "- machine: $(nproc) cores, $(uname -r); servers, HAProxy (TCP, round robin), PostgreSQL (fsync=off) and wrk share the cores"
  echo "- reads: wrk ${WRK_ARGS[*]} -d${DURATION}s GET /api/v1/resources/dev-001; creates: the same, POST with unique names (rate = 201s per second)"
  echo "- propagation: $PROPAGATION PUTs on server 1, each timed until server 2 reads its resourceVersion"
  echo
  echo "| servers | GET req/s | GET p50 ms | GET p99 ms | creates/s | create p50 ms | create p99 ms | errors | write → readable elsewhere p50 / p99 / max ms |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for n in $COUNTS; do
    prop="—"
    [ -z "${PROP[$n]:-}" ] || prop="$(json_field "${PROP[$n]}" p50ms) / $(json_field "${PROP[$n]}" p99ms) / $(json_field "${PROP[$n]}" maxms)"
    printf '| %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %s | %s |\n' "$n" "${GET_RPS[$n]}" "${GET_P50[$n]}" "${GET_P99[$n]}" \
      "${CREATE_RPS[$n]}" "${CREATE_P50[$n]}" "${CREATE_P99[$n]}" "$((GET_ERR[$n] + CREATE_ERR[$n]))" "$prop"
  done
} >"$file"
cp "$file" "$RESULTS_DIR/latest-replicas.md"
cat "$file"
log "wrote $file and bench/results/latest-replicas.md"

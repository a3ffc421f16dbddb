#!/usr/bin/env bash
# bench/invoke.sh — what invoking an operation through Triad adds to calling its upstream.
# The upstream is nginx answering a small JSON body; each case calls it directly, then through
# `POST /api/v1/resources/{name}/operations/{op}` on a Triad server on SQLite and on
# PostgreSQL (one server at a time), with wrk at concurrency 1 and 16. Every Triad call is a
# real invocation: two ledger writes with their events. Loopback only; results to
# bench/results/invoke-*.md and latest-invoke.md.
#
# Knobs (environment):
#   BENCH_DURATION=20        seconds per case (at least 2,000 calls are required of each)
#   BENCH_SKIP_BUILD=1       reuse the existing release binary
#   BENCH_TRIAD_BIN=PATH     run this binary instead of building (implies no build)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$ROOT/bench/.work/invoke
RESULTS_DIR=$ROOT/bench/results
SERVICES=$ROOT/scripts/services.sh
PG_PORT=${TRIAD_PG_PORT:-55432}
TOKEN=bench-invoke-admin-token-0123456789abcdef
UPSTREAM_ADDR=127.0.0.1:18090
SQLITE_ADDR=127.0.0.1:18091
PGSRV_ADDR=127.0.0.1:18092
DURATION=${BENCH_DURATION:-20}

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

command -v wrk >/dev/null 2>&1 && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || {
  log "installing wrk nginx curl"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk nginx curl >/dev/null || die "apt-get install failed"
}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$SERVICES" install pg
"$SERVICES" start pg >/dev/null
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

if [ -n "${BENCH_TRIAD_BIN:-}" ]; then
  TRIAD_BIN=$BENCH_TRIAD_BIN
else
  [ "${BENCH_SKIP_BUILD:-0}" = 1 ] || { log "building triad (release)"; swift build -c release --product triad >&2; }
  TRIAD_BIN=$(swift build -c release --show-bin-path)/triad
fi
[ -x "$TRIAD_BIN" ] || die "no triad binary at $TRIAD_BIN"

rm -rf "$WORK"; mkdir -p "$WORK/nginx/tmp" "$WORK/logs"
TRIAD_PID='' NGINX_PID=''
cleanup() {
  local rc=$?
  [ -z "$TRIAD_PID" ] || { kill -TERM "$TRIAD_PID" 2>/dev/null || true; wait "$TRIAD_PID" 2>/dev/null || true; }
  [ -z "$NGINX_PID" ] || { kill -QUIT "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; }
  exit "$rc"
}
trap cleanup EXIT

# The upstream: nginx answering every POST to /op with a small JSON body.
cat >"$WORK/nginx/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  server {
    listen $UPSTREAM_ADDR;
    location /op { default_type application/json; return 200 '{"ok":true,"percentage":60}'; }
  }
}
CONF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null -X POST "http://$UPSTREAM_ADDR/op" && break; sleep 0.1; done

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"percentage":60}'
wrk.headers["Content-Type"] = "application/json"
LUA

# measure NAME URL CONCURRENCY [TOKEN] — one wrk run; appends a row to ROWS.
ROWS=()
declare -A P50 P99
measure() {
  local name=$1 url=$2 c=$3 auth=${4:-} out="$WORK/wrk-$1.txt"
  local args=(-t1 "-c$c" "-d${DURATION}s" --latency -s "$WORK/post.lua")
  [ -z "$auth" ] || args+=(-H "Authorization: Bearer $auth")
  wrk "${args[@]}" "$url" >"$out"
  local requests p50 p99 non2xx
  requests=$(awk '/requests in/ {print $1}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  p50=$(awk '$1 == "50%" {print $2}' "$out"); p99=$(awk '$1 == "99%" {print $2}' "$out")
  [ "${requests:-0}" -ge 2000 ] || die "$name: only ${requests:-0} calls (at least 2,000 are required); raise BENCH_DURATION"
  [ "$non2xx" = 0 ] || die "$name: $non2xx answers were not 2xx (see $out)"
  P50[$name]=$(to_ms "$p50"); P99[$name]=$(to_ms "$p99")
  ROWS+=("| $name | $c | $requests | ${P50[$name]} | ${P99[$name]} |")
  log "$name: $requests calls, p50 ${P50[$name]} ms, p99 ${P99[$name]} ms"
}
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

start_triad() {
  local name=$1 addr=$2; shift 2
  TRIAD_ADMIN_TOKEN=$TOKEN "$TRIAD_BIN" server --listen "$addr" --data-dir "$WORK/data-$name" "$@" >"$WORK/logs/triad-$name.log" 2>&1 &
  TRIAD_PID=$!
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/healthz")" = 200 ] && break
    kill -0 "$TRIAD_PID" 2>/dev/null || { tail -20 "$WORK/logs/triad-$name.log" >&2; die "triad ($name) exited"; }
    sleep 0.2
  done
  local code
  code=$(curl -s -o "$WORK/create-$name.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    "http://$addr/api/v1/resources" -d '{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"purifier"},"spec":{"kind":"Device","accessMode":"Shared","operations":[{"name":"set_percentage","price":0.01,"httpAction":{"action":"POST","url":"http://'"$UPSTREAM_ADDR"'/op"}}]}}')
  [ "$code" = 201 ] || { cat "$WORK/create-$name.json" >&2; die "creating the resource on $name answered $code"; }
}
stop_triad() { kill -TERM "$TRIAD_PID" 2>/dev/null || true; wait "$TRIAD_PID" 2>/dev/null || true; TRIAD_PID=; }

for c in 1 16; do measure "direct_c$c" "http://$UPSTREAM_ADDR/op" "$c"; done

start_triad sqlite "$SQLITE_ADDR"
for c in 1 16; do measure "sqlite_c$c" "http://$SQLITE_ADDR/api/v1/resources/purifier/operations/set_percentage" "$c" "$TOKEN"; done
stop_triad

DB=triad_bench_invoke
PGPASSWORD=postgres "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtA -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
start_triad postgres "$PGSRV_ADDR" --database "postgres://postgres:postgres@127.0.0.1:$PG_PORT/$DB"
for c in 1 16; do measure "postgres_c$c" "http://$PGSRV_ADDR/api/v1/resources/purifier/operations/set_percentage" "$c" "$TOKEN"; done
stop_triad

added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$RESULTS_DIR/invoke-$STAMP.md
{
  echo "# Invocation overhead ($STAMP)"
  echo
  echo "Upstream: nginx returning a 27-byte JSON body on loopback. Triad: \`$TRIAD_BIN\`, $(nproc) CPUs shared by wrk, nginx, Triad and PostgreSQL."
  echo "wrk -t1, ${DURATION} s per case, POST with a 17-byte JSON body. Latencies in ms."
  echo
  echo "| case | concurrency | calls | p50 | p99 |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Added by Triad (through Triad minus direct, same concurrency, ms):"
  echo
  echo "| backend | c | p50 added | p99 added |"
  echo "|---|---|---|---|"
  for b in sqlite postgres; do for c in 1 16; do
    echo "| $b | $c | $(added "${P50[${b}_c$c]}" "${P50[direct_c$c]}") | $(added "${P99[${b}_c$c]}" "${P99[direct_c$c]}") |"
  done; done
  echo
  echo "Goal: under 1 ms added at p50 and under 3 ms at p99 on SQLite."
} >"$REPORT"
cp "$REPORT" "$RESULTS_DIR/latest-invoke.md"
cat "$REPORT"

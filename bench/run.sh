#!/usr/bin/env bash
# bench/run.sh — the "foundation" benchmark: Triad's read and create rates on SQLite and
# PostgreSQL, each against an anchor measured in the same run on the same machine
# (nginx serving the same JSON statically; pgbench inserting a row of about the same size).
# Loopback only. See bench/README.md.
#
# Knobs (environment):
#   BENCH_DURATION=15          seconds per read case (wrk)
#   BENCH_CREATE_DURATION=10   seconds per create case (wrk + Lua)
#   BENCH_PGBENCH_DURATION=15  seconds per pgbench case
#   BENCH_CREATE_ROUNDS=3      rounds of the interleaved creates (pgbench -c8 5 s, then Triad 5 s)
#   BENCH_SKIP_BUILD=1         reuse the existing release binary
#   BENCH_TRIAD_BIN=PATH       run this binary instead of building (implies no build)
#   BENCH_ANCHORS_ONLY=1       nginx + pgbench only, with synthetic JSON (no Triad server);
#                              for checking the harness itself
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$ROOT/bench/.work            # scratch, git-ignored
OUT=$WORK/out                     # raw tool outputs, kept for inspection
RESULTS_DIR=$ROOT/bench/results
SERVICES=$ROOT/scripts/services.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

PG_PORT=${TRIAD_PG_PORT:-55432}
PG_URL_BASE=postgres://postgres:postgres@127.0.0.1:$PG_PORT
TOKEN=bench-admin-token-0123456789abcdef0123
NGINX_ADDR=127.0.0.1:18080
SQLITE_ADDR=127.0.0.1:18081
PGSRV_ADDR=127.0.0.1:18082
DURATION=${BENCH_DURATION:-15}
CREATE_DURATION=${BENCH_CREATE_DURATION:-10}
PGBENCH_DURATION=${BENCH_PGBENCH_DURATION:-15}
CREATE_ROUNDS=${BENCH_CREATE_ROUNDS:-3}
ROUND_SECONDS=5
WRK_ARGS=(-t2 -c64 --latency)
ANCHORS_ONLY=${BENCH_ANCHORS_ONLY:-0}
ANCHOR_DB=triad_bench_pgbench     # pgbench's own database on the same server

# --- tools ----------------------------------------------------------------------------

install_tools() {
  local pkgs=()
  command -v wrk   >/dev/null 2>&1 || pkgs+=(wrk)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || pkgs+=(nginx)
  command -v curl  >/dev/null 2>&1 || pkgs+=(curl)
  compgen -G '/usr/lib/postgresql/*/bin/pgbench' >/dev/null || pkgs+=(postgresql-contrib)
  apt_install_missing "${pkgs[@]}"
  "$SERVICES" install pg
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# --- processes we start (all stopped by cleanup) ---------------------------------------

TRIAD_PID='' NGINX_PID='' PG_STARTED_HERE=0 TRIAD_LOG=''
cleanup() {
  local rc=$?
  stop_triad
  if [ -n "$NGINX_PID" ]; then kill -QUIT "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
  # Leave PostgreSQL alone if it was already running before this run (someone else's).
  if [ "$PG_STARTED_HERE" = 1 ]; then "$SERVICES" stop pg >/dev/null || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_triad() {
  [ -n "$TRIAD_PID" ] || return 0
  kill -TERM "$TRIAD_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$TRIAD_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$TRIAD_PID" 2>/dev/null || true
  wait "$TRIAD_PID" 2>/dev/null || true
  TRIAD_PID=
}

server_failed() {
  echo "bench: error: $1" >&2
  if [ -n "$TRIAD_LOG" ] && [ -f "$TRIAD_LOG" ]; then
    echo "---- last 40 lines of $TRIAD_LOG ----" >&2; tail -40 "$TRIAD_LOG" >&2
  fi
  exit 1
}

# start_triad NAME ADDR DATABASE DATADIR — start the server and wait for GET /healthz = 200.
start_triad() {
  local name=$1 addr=$2 db=$3 datadir=$4
  port_free "$addr" || die "$addr is already in use"
  TRIAD_LOG=$WORK/logs/triad-$name.log
  TRIAD_ADMIN_TOKEN=$TOKEN "$TRIAD_BIN" server --database "$db" --data-dir "$datadir" --listen "$addr" \
    >"$TRIAD_LOG" 2>&1 &
  TRIAD_PID=$!
  for _ in $(seq 1 300); do
    kill -0 "$TRIAD_PID" 2>/dev/null || { wait "$TRIAD_PID" || true; TRIAD_PID=; server_failed "triad ($name) exited during startup"; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/healthz")" = 200 ] && { log "triad ($name) up on $addr"; return 0; }
    sleep 0.2
  done
  server_failed "triad ($name) did not answer GET /healthz with 200 within 60 s"
}

# seed ADDR — 100 resources dev-001..dev-100 in space "bench".
seed() {
  local addr=$1 i name code
  for i in $(seq -f '%03g' 1 100); do
    name=dev-$i
    code=$(curl -sS -o "$OUT/seed-response.json" -w '%{http_code}' -X POST \
      -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      "http://$addr/api/v1/resources" -d "$(resource_body "$name")") || code=000
    case $code in
      2??) ;;
      *) echo "bench: POST $name answered $code:" >&2; cat "$OUT/seed-response.json" >&2 2>/dev/null; echo >&2
         server_failed "seeding $addr failed" ;;
    esac
  done
  log "seeded 100 resources on $addr"
}

# GET with the token; fail unless 200.
get_json() {
  local url=$1 dest=$2 code
  code=$(curl -sS -o "$dest" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url") || code=000
  [ "$code" = 200 ] || { cat "$dest" >&2 2>/dev/null; server_failed "GET $url answered $code"; }
}

# Without a server (BENCH_ANCHORS_ONLY=1): JSON shaped like what the server is expected to return.
synthesize_json() {
  local html=$1 i items=""
  stored_doc() {
    printf '{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"%s","uid":"0b6f2d3e-5a1c-4e1f-9a7b-2c4d6e8f%04d","resourceVersion":"%d","generation":1,"creationTimestamp":"2026-01-01T00:00:00Z","labels":{"triad.io/space":"bench"}},"spec":{"kind":"Device","description":{"brand":"Acme"},"operations":[{"name":"brew","price":3.5,"httpAction":{"action":"POST","url":"http://127.0.0.1:9101/operations/brew"}}]},"status":{"phase":"Registered"}}' "$1" "$2" "$2"
  }
  stored_doc dev-001 1 >"$html/resource.json"
  for i in $(seq 1 100); do
    items+="${items:+,}$(stored_doc "$(printf 'dev-%03d' "$i")" "$i")"
  done
  printf '{"apiVersion":"triad.io/v1alpha1","kind":"ResourceList","items":[%s]}' "$items" >"$html/list.json"
}

# --- nginx anchor ----------------------------------------------------------------------

start_nginx() {
  local n=$WORK/nginx
  port_free "$NGINX_ADDR" || die "$NGINX_ADDR is already in use"
  mkdir -p "$n/tmp"
  # Private config and prefix: nothing from /etc/nginx, no writes to /var/lib/nginx or /var/log.
  # `user root` because we run as root and the files live under the (root-only) work tree.
  # keepalive_requests is raised so nginx, like the Triad server, keeps wrk's connections open.
  cat >"$n/nginx.conf" <<EOF
user root;
worker_processes 2;
daemon off;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  types { application/json json; }
  default_type application/json;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  client_body_temp_path $n/tmp/body;
  proxy_temp_path $n/tmp/proxy;
  fastcgi_temp_path $n/tmp/fastcgi;
  uwsgi_temp_path $n/tmp/uwsgi;
  scgi_temp_path $n/tmp/scgi;
  server {
    listen $NGINX_ADDR;
    root $n/html;
  }
}
EOF
  "$NGINX" -p "$n" -c "$n/nginx.conf" -e "$n/error.log" &
  NGINX_PID=$!
  for _ in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$NGINX_ADDR/resource.json")" = 200 ] && { log "nginx up on $NGINX_ADDR"; return 0; }
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$n/error.log" >&2 || true
  die "nginx did not come up on $NGINX_ADDR"
}

# --- measuring -------------------------------------------------------------------------

declare -A RPS P50 P99 ERRS NOTE
CASES=()

# wrk_case ID LABEL URL [wrk args...] — a read case.
wrk_case() {
  local id=$1 label=$2 url=$3; shift 3
  log "wrk: $label ($url, ${DURATION}s)"
  wrk "${WRK_ARGS[@]}" -d"${DURATION}s" "$@" "$url" >"$OUT/$id.txt" 2>&1 || { cat "$OUT/$id.txt" >&2; die "wrk failed for $label"; }
  read -r "RPS[$id]" "P50[$id]" "P99[$id]" "ERRS[$id]" < <(parse_wrk "$OUT/$id.txt") || { cat "$OUT/$id.txt" >&2; die "cannot parse wrk output for $label"; }
  NOTE[$id]=$label; CASES+=("$id")
}

# run_creates OUT ADDR SECONDS NAME_PREFIX — wrk POSTing unique resources; its output to OUT.
run_creates() {
  local out=$1 addr=$2 seconds=$3 prefix=$4
  BENCH_NAME_PREFIX=$prefix BENCH_TOKEN=$TOKEN wrk "${WRK_ARGS[@]}" -d"${seconds}s" -s "$WORK/create.lua" "http://$addr" \
    >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed (POST http://$addr/api/v1/resources)"; }
}

# run_pgbench OUT CLIENTS THREADS SECONDS [pgbench args...] — the INSERT anchor on an empty table;
# prints its tps.
run_pgbench() {
  local out=$1 c=$2 j=$3 seconds=$4 tps; shift 4
  psql_tcp -d "$ANCHOR_DB" -c 'truncate bench_items' >/dev/null
  PGPASSWORD=postgres "$PGBIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$PG_PORT" -U postgres \
    -c "$c" -j "$j" -T "$seconds" -f "$WORK/insert.sql" "$@" "$ANCHOR_DB" >"$out" 2>&1 \
    || { cat "$out" >&2; die "pgbench -c$c failed"; }
  tps=$(awk '/^tps = /{printf "%.1f", $3; exit}' "$out")
  [ -n "$tps" ] || { cat "$out" >&2; die "cannot parse pgbench output ($out)"; }
  echo "$tps"
}

# create_case ID LABEL ADDR — POST unique resources for CREATE_DURATION s; rate counts 201s only.
create_case() {
  local id=$1 label=$2 addr=$3 created per_sec statuses
  log "wrk: $label (POST http://$addr/api/v1/resources, ${CREATE_DURATION}s)"
  run_creates "$OUT/$id.txt" "$addr" "$CREATE_DURATION" c
  read -r _ "P50[$id]" "P99[$id]" "ERRS[$id]" < <(parse_wrk "$OUT/$id.txt") || { cat "$OUT/$id.txt" >&2; die "cannot parse wrk output for $label"; }
  created=$(awk '/^CREATED /{print $2}' "$OUT/$id.txt")
  per_sec=$(awk '/^CREATES_PER_SEC /{print $2}' "$OUT/$id.txt")
  statuses=$(awk '/^STATUS /{printf "%s%s×%s", sep, $3, $2; sep=", "}' "$OUT/$id.txt")
  RPS[$id]=$per_sec
  NOTE[$id]="$label — $created created; statuses: ${statuses:-none}"
  CASES+=("$id")
}

# create_rounds ID ADDR — the creates again, interleaved with their anchor: CREATE_ROUNDS rounds
# of pgbench -c8 for ROUND_SECONDS, then Triad's creates for as long. A slow spell of the shared
# machine then falls on both sides of a round's ratio, not on one case of the run.
# ROUNDS[id] holds one "creates/s tps" line per round.
declare -A ROUNDS
create_rounds() {
  local id=$1 addr=$2 r anchor created
  for r in $(seq 1 "$CREATE_ROUNDS"); do
    log "round $r of $CREATE_ROUNDS: pgbench -c8 then $id (${ROUND_SECONDS}s each)"
    anchor=$(run_pgbench "$OUT/$id-round$r-pgbench.txt" 8 2 "$ROUND_SECONDS")
    run_creates "$OUT/$id-round$r.txt" "$addr" "$ROUND_SECONDS" "r$r"
    created=$(awk '/^CREATES_PER_SEC /{print $2}' "$OUT/$id-round$r.txt")
    [ -n "$created" ] || die "cannot parse round $r of $id (see $OUT/$id-round$r.txt)"
    ROUNDS[$id]+="$created $anchor"$'\n'
  done
}

# pgbench_case ID LABEL CLIENTS THREADS — inserts into bench_items; p50/p99 from per-transaction logs.
pgbench_case() {
  local id=$1 label=$2 c=$3 j=$4
  log "pgbench: $label (${PGBENCH_DURATION}s)"
  rm -f "$OUT/$id.log"*
  RPS[$id]=$(run_pgbench "$OUT/$id.txt" "$c" "$j" "$PGBENCH_DURATION" -l --log-prefix="$OUT/$id.log")
  # Column 3 of pgbench's log is each transaction's latency in microseconds.
  read -r "P50[$id]" "P99[$id]" < <(cat "$OUT/$id.log"* | awk '{print $3}' | sort -n | awk '
    { v[NR] = $1 } END { i50 = int(NR * 0.50); i99 = int(NR * 0.99); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
                         printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')
  ERRS[$id]=$(awk '/^number of failed transactions:/{print $5; exit}' "$OUT/$id.txt"); ERRS[$id]=${ERRS[$id]:-0}
  NOTE[$id]=$label; CASES+=("$id")
  rm -f "$OUT/$id.log"*   # large; the summary is in $OUT/$id.txt
}

write_scripts() {
  write_create_lua "$WORK/create.lua"

  # One row like a stored resource (~640 bytes of jsonb), unique-ish name; same server as Triad's.
  DOC='{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"p-bench","uid":"0b6f2d3e-5a1c-4e1f-9a7b-2c4d6e8f0001","resourceVersion":"1","generation":1,"creationTimestamp":"2026-01-01T00:00:00Z","labels":{"triad.io/space":"bench"},"annotations":{"triad.io/created-by":"bench-admin"}},"spec":{"kind":"Device","description":{"brand":"Acme"},"operations":[{"name":"brew","price":3.5,"httpAction":{"action":"POST","url":"http://127.0.0.1:9101/operations/brew"}}]},"status":{"phase":"Registered"}}'
  cat >"$WORK/insert.sql" <<EOF
\\set r random(1, 1000000000)
INSERT INTO bench_items (name, doc) VALUES ('p-' || CAST(:client_id AS text) || '-' || CAST(:r AS text), '$DOC'::jsonb);
EOF
}

# --- report ----------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.3g", a / b; else print "n/a" }'; }

write_report() {
  local stamp=$1 file=$RESULTS_DIR/foundation-$1.md id anchor r
  declare -A ANCHOR=(
    [sqlite_get]=nginx_resource [pg_get]=nginx_resource
    [sqlite_list]=nginx_list    [pg_list]=nginx_list
    [sqlite_create]=pgbench_c1  [pg_create]=pgbench_c1
  )
  mkdir -p "$RESULTS_DIR"
  {
    echo "# Foundation benchmark — $stamp"
    echo
    echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)')"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load generator on the same cores"
    echo "- reads: wrk ${WRK_ARGS[*]} -d${DURATION}s; creates: wrk ${WRK_ARGS[*]} -d${CREATE_DURATION}s, POST with unique names, rate = 201s per second"
    echo "- pgbench: -n -M prepared -T${PGBENCH_DURATION}, one INSERT of a ${DOC_BYTES}-byte jsonb doc + text name into bench_items (bigserial PK), fsync=off"
    echo "- resource.json ${RESOURCE_BYTES} B, list.json ${LIST_BYTES} B$([ "$ANCHORS_ONLY" = 1 ] && echo ' (synthetic: BENCH_ANCHORS_ONLY=1, no Triad server)')"
    echo
    echo "| case | req/s | p50 ms | p99 ms | errors | ratio vs anchor |"
    echo "|---|---:|---:|---:|---:|---|"
    for id in "${CASES[@]}"; do
      anchor=${ANCHOR[$id]:-}
      if [ -z "$anchor" ]; then r="anchor"
      else
        r="$(ratio "${RPS[$id]}" "${RPS[$anchor]:-0}")× ${anchor}"
        if [ "$anchor" = pgbench_c1 ] && [ -n "${RPS[pgbench_c8]:-}" ]; then
          r+=" ($(ratio "${RPS[$id]}" "${RPS[pgbench_c8]}")× pgbench_c8)"
        fi
      fi
      printf '| %s: %s | %.0f | %.2f | %.2f | %s | %s |\n' "$id" "${NOTE[$id]}" "${RPS[$id]}" "${P50[$id]}" "${P99[$id]}" "${ERRS[$id]}" "$r"
    done
    echo
    echo "errors = non-2xx/3xx responses + socket errors (wrk), failed transactions (pgbench). Raw outputs: bench/.work/out/."
    if [ "${#ROUNDS[@]}" -gt 0 ]; then
      echo
      echo "## Creates interleaved with pgbench -c8"
      echo
      echo "${CREATE_ROUNDS} rounds, each pgbench -c8 -j2 for ${ROUND_SECONDS} s and then Triad's creates (wrk as above) for ${ROUND_SECONDS} s: each round's ratio compares two rates measured a few seconds apart."
      echo
      echo "| case | creates/s per round | pgbench -c8 tps per round | ratio per round | median ratio |"
      echo "|---|---|---|---|---:|"
      local creates anchors ratios
      for id in sqlite_create pg_create; do
        [ -n "${ROUNDS[$id]:-}" ] || continue
        creates=$(printf '%s' "${ROUNDS[$id]}" | awk '{ printf "%s%.0f", sep, $1; sep = ", " }')
        anchors=$(printf '%s' "${ROUNDS[$id]}" | awk '{ printf "%s%.0f", sep, $2; sep = ", " }')
        ratios=$(printf '%s' "${ROUNDS[$id]}" | awk '{ printf "%s%.3f", sep, $1 / $2; sep = " " }')
        # shellcheck disable=SC2086 # one argument per round
        printf '| %s | %s | %s | %s | %s× |\n' "$id" "$creates" "$anchors" "${ratios// /, }" "$(median $ratios)"
      done
    fi
  } >"$file"
  cp "$file" "$RESULTS_DIR/latest-foundation.md"
  echo
  cat "$file"
  echo
  log "wrote $file and bench/results/latest-foundation.md"
}

# --- main ------------------------------------------------------------------------------

main() {
  [ "$(id -u)" = 0 ] || die "run as root (installs packages, runs PostgreSQL via runuser)"
  local stamp; stamp=$(date -u +%Y%m%dT%H%M%SZ)
  install_tools

  if [ "$ANCHORS_ONLY" != 1 ]; then
    if [ -n "${BENCH_TRIAD_BIN:-}" ]; then
      TRIAD_BIN=$BENCH_TRIAD_BIN
    else
      command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
      if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
        log "building: swift build -c release --product triad"
        swift build -c release --product triad || die "release build failed"
      fi
      TRIAD_BIN=$(swift build -c release --show-bin-path)/triad
    fi
    [ -x "$TRIAD_BIN" ] || die "$TRIAD_BIN not found (build failed?)"
  fi

  # A clean scratch dir each run (keeps nothing from a previous run but the path).
  rm -rf "$WORK"
  mkdir -p "$WORK/logs" "$OUT" "$WORK/nginx/html" "$WORK/sqlite" "$WORK/pg"
  write_scripts

  "$SERVICES" status pg >/dev/null 2>&1 || PG_STARTED_HERE=1
  "$SERVICES" start pg >&2
  psql_tcp -d postgres -c 'drop database if exists triad_bench with (force)' -c 'create database triad_bench'
  psql_tcp -d postgres -c "drop database if exists $ANCHOR_DB with (force)" -c "create database $ANCHOR_DB"
  psql_tcp -d "$ANCHOR_DB" -c 'create table bench_items (id bigserial primary key, name text, doc jsonb)'
  DOC_BYTES=$(psql_tcp -d "$ANCHOR_DB" -c "select pg_column_size('$DOC'::jsonb)")

  # The static anchor serves exactly what Triad answers (fetched from the SQLite server).
  if [ "$ANCHORS_ONLY" = 1 ]; then
    synthesize_json "$WORK/nginx/html"
  else
    start_triad sqlite "$SQLITE_ADDR" "sqlite:bench/.work/sqlite/triad.db" bench/.work/sqlite
    seed "$SQLITE_ADDR"
    get_json "http://$SQLITE_ADDR/api/v1/resources/dev-001" "$WORK/nginx/html/resource.json"
    get_json "http://$SQLITE_ADDR/api/v1/resources?limit=100" "$WORK/nginx/html/list.json"
    [ "$(grep -o '"dev-[0-9]*"' "$WORK/nginx/html/list.json" | sort -u | wc -l)" -ge 100 ] \
      || log "warning: list.json does not name 100 distinct dev-NNN resources"
  fi
  RESOURCE_BYTES=$(wc -c <"$WORK/nginx/html/resource.json")
  LIST_BYTES=$(wc -c <"$WORK/nginx/html/list.json")

  start_nginx
  wrk_case nginx_resource "nginx GET /resource.json" "http://$NGINX_ADDR/resource.json"
  wrk_case nginx_list "nginx GET /list.json" "http://$NGINX_ADDR/list.json"
  # nginx idles from here on; stop it so it takes nothing from the Triad cases.
  kill -QUIT "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=

  if [ "$ANCHORS_ONLY" != 1 ]; then
    local auth=(-H "Authorization: Bearer $TOKEN")
    wrk_case sqlite_get "triad/sqlite GET /api/v1/resources/dev-001" "http://$SQLITE_ADDR/api/v1/resources/dev-001" "${auth[@]}"
    wrk_case sqlite_list "triad/sqlite GET /api/v1/resources?limit=100" "http://$SQLITE_ADDR/api/v1/resources?limit=100" "${auth[@]}"
    create_case sqlite_create "triad/sqlite POST /api/v1/resources" "$SQLITE_ADDR"
    create_rounds sqlite_create "$SQLITE_ADDR"
    stop_triad

    start_triad pg "$PGSRV_ADDR" "$PG_URL_BASE/triad_bench" bench/.work/pg
    seed "$PGSRV_ADDR"
    wrk_case pg_get "triad/postgres GET /api/v1/resources/dev-001" "http://$PGSRV_ADDR/api/v1/resources/dev-001" "${auth[@]}"
    wrk_case pg_list "triad/postgres GET /api/v1/resources?limit=100" "http://$PGSRV_ADDR/api/v1/resources?limit=100" "${auth[@]}"
    create_case pg_create "triad/postgres POST /api/v1/resources" "$PGSRV_ADDR"
    create_rounds pg_create "$PGSRV_ADDR"
    stop_triad
  fi

  pgbench_case pgbench_c1 "pgbench INSERT, 1 client" 1 1
  pgbench_case pgbench_c8 "pgbench INSERT, 8 clients, 2 threads" 8 2

  write_report "$stamp"
}

main "$@"

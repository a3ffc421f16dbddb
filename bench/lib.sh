# bench/lib.sh — what the benchmark scripts share; sourced, not run.
# Needs ROOT set by the caller; PGBIN and PG_PORT for psql_tcp.

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

# apt_install_missing PACKAGE... — installs the named Debian packages (callers pass those missing).
apt_install_missing() {
  [ $# -gt 0 ] || return 0
  log "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# median NUMBER... — the median, to 3 decimals.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

# client_min_messages: no "does not exist, skipping" notices from the drops.
psql_tcp() { PGPASSWORD=postgres PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

# parse_wrk FILE — prints "rps p50ms p99ms errors" (errors = non-2xx/3xx + socket errors).
parse_wrk() {
  awk '
    function ms(v) { if (v ~ /us$/) return v * 0.001; if (v ~ /ms$/) return v + 0;
                     if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v + 0 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { err += $4 + $6 + $8 + $10 }
    END { if (rps == "") exit 1; printf "%.1f %.3f %.3f %d\n", rps, p50, p99, err }' "$1"
}

# write_create_lua FILE — a wrk script that POSTs resources with unique names
# ("<BENCH_NAME_PREFIX or c>-<thread>-<n>")
# and prints CREATED, CREATES_PER_SEC and one STATUS line per response status.
write_create_lua() {
  cat >"$1" <<'LUA'
local threads, next_tid = {}, 1
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local n = 0
statuses = {}
local prefix = os.getenv("BENCH_NAME_PREFIX") or "c"
local headers = {
  ["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "bench-admin-token"),
  ["Content-Type"] = "application/json",
}
local template = '{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"%s-%d-%d","labels":{"triad.io/space":"bench"}},"spec":{"kind":"Device","description":{"brand":"Acme"},"operations":[{"name":"brew","price":3.5,"httpAction":{"action":"POST","url":"http://127.0.0.1:9101/operations/brew"}}]}}'

function request()
  n = n + 1
  return wrk.format("POST", "/api/v1/resources", headers, string.format(template, prefix, tid, n))
end

function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
  end
  local created = total[201] or 0
  io.write(string.format("CREATED %d\nCREATES_PER_SEC %.1f\n", created, created / (summary.duration / 1e6)))
  for k, v in pairs(total) do io.write(string.format("STATUS %d %d\n", k, v)) end
end
LUA
}

# resource_body NAME — the document the benchmarks seed.
resource_body() {
  printf '{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"%s","labels":{"triad.io/space":"bench"}},"spec":{"kind":"Device","description":{"brand":"Acme"},"operations":[{"name":"brew","price":3.5,"httpAction":{"action":"POST","url":"http://127.0.0.1:9101/operations/brew"}}]}}' "$1"
}

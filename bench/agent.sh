#!/usr/bin/env bash
# bench/agent.sh — what a device agent adds to a Home Assistant service call. The same call,
# fan.set_percentage on fan.air_purifier, is made directly against Home Assistant's REST API,
# then to the agent alone (as Triad calls it), then through Triad (REST → server → agent → Home
# Assistant) as
# `POST /api/v1/resources/{name}/operations/set_percentage`, with wrk at concurrency 1. Every
# Triad call is a real invocation, recorded in the ledger. Uses the Home Assistant that
# scripts/services.sh starts; loopback only; results to bench/results/agent-*.md and
# latest-agent.md.
#
# Knobs (environment):
#   BENCH_DURATION=25        seconds per case, split over the rounds (at least 500 calls are
#                            required of each case; 5 s a round gives each round's p99 some
#                            500 calls or more on the 2-vCPU machine)
#   BENCH_ROUNDS=5           the cases run interleaved, this many rounds: Home Assistant's own
#                            latency drifts by a millisecond and more over a minute, and cases
#                            run one after the other took that drift for Triad's cost
#   BENCH_SKIP_BUILD=1       reuse the existing release binary
#   BENCH_TRIAD_BIN=PATH     run this binary instead of building (implies no build)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$ROOT/bench/.work/agent
RESULTS_DIR=$ROOT/bench/results
SERVICES=$ROOT/scripts/services.sh
TOKEN=bench-agent-admin-token-0123456789abcdef
TRIAD_ADDR=127.0.0.1:18191
AGENT_ADDR=127.0.0.1:18192
HA_URL=http://127.0.0.1:${TRIAD_HA_PORT:-58123}
HA_TOKEN_FILE=${TRIAD_SVC_DIR:-/tmp/triad-services}/homeassistant/token
DURATION=${BENCH_DURATION:-25}
ROUNDS=${BENCH_ROUNDS:-5}

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

command -v wrk >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 || {
  log "installing wrk curl"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk curl >/dev/null || die "apt-get install failed"
}
"$SERVICES" install homeassistant
"$SERVICES" start homeassistant >/dev/null
HA_TOKEN=$(cat "$HA_TOKEN_FILE")

if [ -n "${BENCH_TRIAD_BIN:-}" ]; then
  TRIAD_BIN=$BENCH_TRIAD_BIN
else
  [ "${BENCH_SKIP_BUILD:-0}" = 1 ] || { log "building triad (release)"; swift build -c release --product triad >&2; }
  TRIAD_BIN=$(swift build -c release --show-bin-path)/triad
fi
[ -x "$TRIAD_BIN" ] || die "no triad binary at $TRIAD_BIN"

rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT

TRIAD_ADMIN_TOKEN=$TOKEN "$TRIAD_BIN" server --listen "$TRIAD_ADDR" --data-dir "$WORK/data" >"$WORK/triad.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$TRIAD_ADDR/healthz")" = 200 ] && break; sleep 0.2; done
printf '%s\n' "$TOKEN" > "$WORK/admin.token"
cat > "$WORK/agents.yaml" <<YAML
triad: {url: "http://$TRIAD_ADDR", tokenFile: admin.token}
listen: $AGENT_ADDR
homeAssistant: {url: "$HA_URL", tokenFile: "$HA_TOKEN_FILE"}
agents:
  - name: purifier-bench
    device: {type: fan, entity: fan.air_purifier}
    accessMode: Shared
    prices: {set_percentage: 0.25}
YAML
"$TRIAD_BIN" agent --config "$WORK/agents.yaml" >"$WORK/agent.log" 2>&1 &
PIDS+=($!)
APP=$(TRIAD_TOKEN=$TOKEN "$TRIAD_BIN" token create --role app --name bench-app --server "http://$TRIAD_ADDR")
OP_URL="http://$TRIAD_ADDR/api/v1/resources/purifier-bench/operations/set_percentage"
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $APP" -d '{"percentage":60}' "$OP_URL")" = 200 ] && break
  sleep 0.2
done

cat >"$WORK/direct.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"entity_id":"fan.air_purifier","percentage":60}'
wrk.headers["Content-Type"] = "application/json"
LUA
cat >"$WORK/triad.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"percentage":60}'
wrk.headers["Content-Type"] = "application/json"
LUA

declare -A CALLS P50S P99S
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }
# this_round NAME — the case's p50 in the round just measured
this_round() { echo "${P50S[$1]}" | awk '{print $NF}'; }
# measure NAME URL SCRIPT TOKEN ROUND — one round of a case: its calls, p50 and p99 are kept.
measure() {
  local name=$1 url=$2 script=$3 auth=$4 round=$5 out="$WORK/wrk-$1-$5.txt"
  wrk -t1 -c1 "-d${SLICE}s" --latency -s "$script" -H "Authorization: Bearer $auth" "$url" >"$out"
  local requests p50 p99 non2xx
  requests=$(awk '/requests in/ {print $1}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  p50=$(awk '$1 == "50%" {print $2}' "$out"); p99=$(awk '$1 == "99%" {print $2}' "$out")
  [ "$non2xx" = 0 ] || die "$name: $non2xx answers were not 2xx (see $out)"
  CALLS[$name]=$(( ${CALLS[$name]:-0} + requests ))
  P50S[$name]="${P50S[$name]:-} $(to_ms "$p50")"; P99S[$name]="${P99S[$name]:-} $(to_ms "$p99")"
  log "round $round, $name: $requests calls, p50 $(to_ms "$p50") ms, p99 $(to_ms "$p99") ms"
}

# The agent alone (what Triad calls): its URL and invocation secret, as the operation has them.
read -r AGENT_URL AGENT_SECRET < <(curl -s -H "Authorization: Bearer $TOKEN" "http://$TRIAD_ADDR/api/v1/resources/purifier-bench" | python3 -c '
import json, sys
op = next(o for o in json.load(sys.stdin)["spec"]["operations"] if o["name"] == "set_percentage")
print(op["httpAction"]["url"], op["httpAction"]["headers"]["Authorization"].split(" ", 1)[1])')

# The server's own time per call (its request time less its upstream call's), from its metrics:
# only the Triad case calls it, so the difference of two readings covers exactly those calls.
server_times() {
  curl -s -H "Authorization: Bearer $TOKEN" "http://$TRIAD_ADDR/metrics" | awk '
    /^triad_http_request_duration_seconds_(sum|count)\{route="\/api\/v1\/resources\/\{name\}\/operations\/\{op\}",method="POST",status="200"\}/ {
      if ($1 ~ /_sum/) rs = $2; else rc = $2 }
    /^triad_invocation_upstream_seconds_sum / { us = $2 }
    END { printf "%s %s %s\n", rs + 0, rc + 0, us + 0 }'
}
read -r REQ_SUM0 REQ_COUNT0 UP_SUM0 < <(server_times)
SLICE=$(( DURATION / ROUNDS )); [ "$SLICE" -ge 1 ] || SLICE=1
ADDED=() ADDED_AGENT=() ADDED_PACED=()
for round in $(seq "$ROUNDS"); do
  measure direct "$HA_URL/api/services/fan/set_percentage" "$WORK/direct.lua" "$HA_TOKEN" "$round"
  measure agent "$AGENT_URL" "$WORK/triad.lua" "$AGENT_SECRET" "$round"
  measure triad "$OP_URL" "$WORK/triad.lua" "$APP" "$round"
  # Home Assistant answers a call later when calls come further apart (it idles between them),
  # and through Triad they come a few ms apart: the same direct call again, with that pause
  # between calls (this round's Triad p50 less its direct one, whole ms, at least 1).
  d=$(this_round direct); a=$(this_round agent); t=$(this_round triad)
  PAUSE=$(awk -v a="$t" -v b="$d" 'BEGIN { p = int(a - b + 0.5); print (p < 1 ? 1 : p) }')
  { cat "$WORK/direct.lua"; echo "function delay() return $PAUSE end"; } >"$WORK/direct-paced.lua"
  measure direct_paced "$HA_URL/api/services/fan/set_percentage" "$WORK/direct-paced.lua" "$HA_TOKEN" "$round"
  p=$(this_round direct_paced)
  ADDED+=("$(awk -v a="$t" -v b="$d" 'BEGIN { printf "%.3f", a - b }')")
  ADDED_AGENT+=("$(awk -v a="$a" -v b="$d" 'BEGIN { printf "%.3f", a - b }')")
  ADDED_PACED+=("$(awk -v a="$t" -v b="$p" 'BEGIN { printf "%.3f", a - b }')")
done
read -r REQ_SUM1 REQ_COUNT1 UP_SUM1 < <(server_times)
SERVER_OWN=$(awk -v a="$REQ_SUM0" -v b="$REQ_SUM1" -v c="$UP_SUM0" -v d="$UP_SUM1" -v n0="$REQ_COUNT0" -v n1="$REQ_COUNT1" \
  'BEGIN { n = n1 - n0; if (n > 0) printf "%.3f", 1000 * ((b - a) - (d - c)) / n; else print "n/a" }')
for name in direct agent triad direct_paced; do
  [ "${CALLS[$name]}" -ge 500 ] || die "$name: only ${CALLS[$name]} calls (at least 500 are required); raise BENCH_DURATION"
done
recorded=$(curl -s -H "Authorization: Bearer $TOKEN" "http://$TRIAD_ADDR/api/v1/invocations?resource=purifier-bench&limit=1" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["matched"])')

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$RESULTS_DIR/agent-$STAMP.md
{
  echo "# Device agent: a Home Assistant service call, direct and through Triad ($STAMP)"
  echo
  echo "fan.set_percentage 60 on fan.air_purifier, wrk -c1, $ROUNDS rounds of ${SLICE}s per case, the four cases interleaved in each round; same machine, loopback."
  echo "Binary: $TRIAD_BIN. Ledger entries recorded for the Triad case (with warm-up): $recorded."
  echo
  echo "| case | calls | p50 ms (median of rounds) | p99 ms (median of rounds) | p50 of each round |"
  echo "|---|---|---|---|---|"
  for name in direct agent triad direct_paced; do
    # shellcheck disable=SC2086
    echo "| $name | ${CALLS[$name]} | $(median ${P50S[$name]}) | $(median ${P99S[$name]}) | ${P50S[$name]# } |"
  done
  echo
  echo "Added by Triad (each round's Triad p50 less the same round's direct p50; median of the rounds): p50 +$(median "${ADDED[@]}") ms (goal: under 2 ms at p50), by round: ${ADDED[*]}; of which the agent alone: +$(median "${ADDED_AGENT[@]}") ms."
  echo
  echo "Triad's server alone, from its own metrics over the Triad rounds (request time less the time in the upstream call, which is the agent's and Home Assistant's): $SERVER_OWN ms per call (a mean, not a median)."
  echo
  echo "Against direct calls paced like the Triad case (each round's pause: its Triad p50 less its direct p50, whole ms, at least 1; direct_paced): p50 +$(median "${ADDED_PACED[@]}") ms, by round: ${ADDED_PACED[*]}. Home Assistant alone answers the same call later when calls come apart than back to back; the first line compares with back-to-back calls."
} >"$OUT"
cp "$OUT" "$RESULTS_DIR/latest-agent.md"
cat "$OUT"

#!/usr/bin/env bash
# Overload benchmark: the example system (Portal -> Auth, Proc -> Auth, Proc -> DB) as a mesh
# (pinPropagation: PROPAGATION, default mesh) driven past its capacity. In one run:
#   1. its capacity: closed-loop throughput with CONCURRENCY workers, fast transactions only;
#   2. open loop at FACTOR x that capacity for SECONDS (SLOW_FRACTION of transactions sleeping
#      SLOW_MS), twice: with Envoy's default limits, and with gateway.maxInFlight = LIMIT.
# For each: transactions answered 2xx per second and their p50/p99; 503s (the gateway refusing:
# x-envoy-overloaded) and the p99 of their answer time; time-outs (no answer in TIMEOUT s) and
# other failures; how far the load generator fell behind its schedule.
# Writes bench/results/overload-<UTC>.md and .json, and bench/results/latest-overload.md.
# Run it alone: it uses both cores. Needs: swift build (debug triad), python3, Envoy
# (TRIAD_ENVOY or scripts/envoy.sh).
#   FACTOR=2 LIMIT=32 SECONDS_LOAD=15 bash bench/overload.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TRIAD=${TRIAD:-$ROOT/.build/debug/triad}
case $TRIAD in */release/*) export TRIAD_BUILD=release ;; *) export TRIAD_BUILD=debug ;; esac
export TRIAD_ENVOY=${TRIAD_ENVOY:-$(bash "$ROOT/scripts/envoy.sh")}
PY=$ROOT/agents/examples/python
FACTOR=${FACTOR:-2}
LIMIT=${LIMIT:-32}
SECONDS_LOAD=${SECONDS_LOAD:-15}
SECONDS_CAPACITY=${SECONDS_CAPACITY:-10}
CONCURRENCY=${CONCURRENCY:-16}
SLOW_FRACTION=${SLOW_FRACTION:-0.2}
SLOW_MS=${SLOW_MS:-500}
TIMEOUT=${TIMEOUT:-5}
WORKERS=${WORKERS:-256}
PROPAGATION=${PROPAGATION:-mesh}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/triad-bench-overload.XXXXXX)
OUT=$ROOT/bench/results
mkdir -p "$OUT"
cleanup() {
  for d in "$WORK"/*/; do [ -f "$d/.triad-mesh/state.json" ] && (cd "$d" && "$TRIAD" mesh down >/dev/null 2>&1) || true; done
}
trap cleanup EXIT
[ -x "$TRIAD" ] || { echo "overload.sh: error: $TRIAD not found; run swift build first" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

mesh_up() { # dir port [limit]
  mkdir -p "$1"
  sed -e "s#python/#$PY/#g" -e "s/127.0.0.1:8000/127.0.0.1:$2/" -e "s/pinPropagation: mesh /pinPropagation: $PROPAGATION /" \
    "$ROOT/agents/examples/mesh.yaml" > "$1/mesh.yaml"
  if [ -n "${3:-}" ]; then
    sed -i "s/    service: portal$/    service: portal\n    maxInFlight: $3/" "$1/mesh.yaml"
    grep -q "maxInFlight: $3" "$1/mesh.yaml" || { echo "overload.sh: error: could not set maxInFlight" >&2; exit 1; }
  fi
  (cd "$1" && "$TRIAD" mesh up -f mesh.yaml >/dev/null)
}
mesh_down() { (cd "$1" && "$TRIAD" mesh down >/dev/null); }

echo "== 1. capacity (closed loop, $CONCURRENCY workers, ${SECONDS_CAPACITY}s)"
PORT=$(free_port)
mesh_up "$WORK/capacity" "$PORT"
python3 "$PY/loadgen.py" "http://127.0.0.1:$PORT" --closed-loop --concurrency "$CONCURRENCY" --duration "$SECONDS_CAPACITY" \
  --slow-fraction 0 > "$WORK/capacity.json"
mesh_down "$WORK/capacity"
CAPACITY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["throughput_tps"])' "$WORK/capacity.json")
RATE=$(python3 -c "print(round($CAPACITY * $FACTOR, 1))")
echo "   capacity $CAPACITY tx/s; offering $RATE tx/s"

for run in unlimited limited; do
  echo "== 2. $run: $RATE tx/s for ${SECONDS_LOAD}s"
  PORT=$(free_port)
  if [ "$run" = limited ]; then mesh_up "$WORK/$run" "$PORT" "$LIMIT"; else mesh_up "$WORK/$run" "$PORT"; fi
  python3 "$PY/loadgen.py" "http://127.0.0.1:$PORT" --rate "$RATE" --duration "$SECONDS_LOAD" --concurrency "$WORKERS" \
    --slow-fraction "$SLOW_FRACTION" --slow-ms "$SLOW_MS" --timeout "$TIMEOUT" --seed 7 --trace-log "$WORK/$run.log" > "$WORK/$run.json"
  mesh_down "$WORK/$run"
done

python3 - "$WORK" "$OUT" "$STAMP" "$CAPACITY" "$RATE" "$LIMIT" "$SECONDS_LOAD" "$SLOW_FRACTION" "$SLOW_MS" "$TIMEOUT" "$WORKERS" "$PROPAGATION" <<'PYEOF'
import json, math, os, sys
work, out, stamp, capacity, rate, limit, seconds, slow_fraction, slow_ms, timeout, workers, propagation = sys.argv[1:]

def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[max(0, math.ceil(p / 100 * len(values)) - 1)], 2)

rows = {}
for run in ["unlimited", "limited"]:
    summary = json.load(open(f"{work}/{run}.json"))
    entries = [json.loads(l) for l in open(f"{work}/{run}.log")]
    ok = [e["ms"] for e in entries if e.get("ok")]
    refused = [e["ms"] for e in entries if e.get("status") == 503]
    timeouts = sum(1 for e in entries if "Timeout" in str(e.get("error", "")) or "timed out" in str(e.get("error", "")))
    other = len(entries) - len(ok) - len(refused) - timeouts
    rows[run] = {
        "sent": summary["sent"], "ok": len(ok), "ok_per_s": round(len(ok) / summary["wall_s"], 1), "wall_s": summary["wall_s"],
        "ok_p50_ms": pct(ok, 50), "ok_p99_ms": pct(ok, 99),
        "refused_503": len(refused), "refused_p50_ms": pct(refused, 50), "refused_p99_ms": pct(refused, 99),
        "timeouts": timeouts, "other_failures": other, "failures_by_status": summary["failures_by_status"],
        "max_start_lag_ms": summary["max_start_lag_ms"], "achieved_rps": summary["achieved_rps"],
        "failure_examples": summary["failure_examples"][:2],
    }
result = {"stamp": stamp, "capacity_tps": float(capacity), "offered_tps": float(rate), "max_in_flight": int(limit),
          "seconds": float(seconds), "slow_fraction": float(slow_fraction), "slow_ms": int(slow_ms),
          "timeout_s": float(timeout), "loadgen_workers": int(workers), "pin_propagation": propagation, "runs": rows}
json.dump(result, open(f"{out}/overload-{stamp}.json", "w"), indent=2)
lines = [
    f"# Overload benchmark {stamp}",
    "",
    f"The example system as a mesh (pinPropagation: {propagation}), {os.environ.get('TRIAD_BUILD', 'debug')} build of triad, on this machine's shared vCPUs. "
    f"Capacity (closed loop, fast transactions): {capacity} tx/s. Offered: {rate} tx/s open loop for {seconds} s, "
    f"{float(slow_fraction) * 100:.0f} % of transactions sleeping {slow_ms} ms, a client time-out of {timeout} s, "
    f"{workers} load-generator connections. `limited`: gateway.maxInFlight {limit}.",
    "",
    "| run | sent | ok | ok/s of wall time | ok p50 (ms) | ok p99 (ms) | refused (503) | refused p50 (ms) | refused p99 (ms) | time-outs | other failures | generator lag (ms) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for run, r in rows.items():
    lines.append(f"| {run} | {r['sent']} | {r['ok']} | {r['ok_per_s']} | {r['ok_p50_ms']} | {r['ok_p99_ms']} | {r['refused_503']} | "
                 f"{r['refused_p50_ms']} | {r['refused_p99_ms']} | {r['timeouts']} | {r['other_failures']} | {r['max_start_lag_ms']} |")
lines += [
    "",
    "ok/s counts the run's wall time, which grows past the nominal seconds when the load generator falls behind "
    "(its lag: the open loop turned closed because every connection was waiting).",
    "Goal: past capacity, refusals fast (p99 of refusals under 50 ms) instead of time-outs.",
    "",
]
text = "\n".join(lines)
open(f"{out}/overload-{stamp}.md", "w").write(text)
open(f"{out}/latest-overload.md", "w").write(text)
print(text)
PYEOF

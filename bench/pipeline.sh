#!/usr/bin/env bash
# bench/pipeline.sh — the telemetry pipeline benchmark: probe → MQTT → Triad → AMQP →
# a consuming integrator, beside the machine's two ceilings measured in the same run (one
# subscriber's receive rate from Mosquitto; RabbitMQ's confirmed publish rate).
#
#   1. ceilings: triad-bench mqtt-ceiling (best of three floods) and amqp-ceiling (100 000 messages each)
#   2. ramp: the pipeline at rising rates for BENCH_STEP_SECONDS each; the sustained rate is the
#      highest with nothing lost, nothing duplicated, the publisher keeping pace, and no backlog
#      building up (median publish→consume latency under 100 ms)
#   3. half load: half the sustained rate for BENCH_HALF_SECONDS: p50/p99 publish→consume
#      latency, and the server's resident memory sampled every 5 s (flat or not)
#
# Knobs: BENCH_STEP_SECONDS=10 BENCH_HALF_SECONDS=60 BENCH_RATES="1000 2000 4000 6000 8000 9000 10000 11000 12000 14000 16000"
#        BENCH_TELEMETRY_EVENTS=single|batch (the server's --telemetry-events; batch results go to
#        pipeline-batch-*.md and latest-pipeline-batch.md)
#        BENCH_SKIP_BUILD=1 (reuse the release binaries)
#        BENCH_TRIAD_BIN=PATH (run this triad, and the triad-bench next to it; implies no build)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$ROOT/bench/.work/pipeline
RESULTS_DIR=$ROOT/bench/results
SERVICES=$ROOT/scripts/services.sh
MQTT=mqtt://127.0.0.1:${TRIAD_MQTT_PORT:-51883}
AMQP=amqp://guest:guest@127.0.0.1:${TRIAD_AMQP_PORT:-55672}
ADDR=127.0.0.1:18095
TOKEN=bench-pipeline-token-0123456789abcdef
DEVICES=50
STEP=${BENCH_STEP_SECONDS:-10}
HALF=${BENCH_HALF_SECONDS:-60}
RATES=${BENCH_RATES:-"1000 2000 4000 6000 8000 9000 10000 11000 12000 14000 16000"}
MODE=${BENCH_TELEMETRY_EVENTS:-single}
case $MODE in single) NAME=pipeline ;; batch) NAME=pipeline-batch ;; *) echo "pipeline: error: BENCH_TELEMETRY_EVENTS must be single or batch" >&2; exit 1 ;; esac

log() { echo "pipeline: $*" >&2; }
die() { echo "pipeline: error: $*" >&2; exit 1; }

command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
"$SERVICES" install rabbitmq mosquitto
"$SERVICES" start rabbitmq mosquitto >&2

if [ -n "${BENCH_TRIAD_BIN:-}" ]; then
  BIN=$(dirname "$BENCH_TRIAD_BIN")
else
  if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    swift build -c release --product triad >&2
    swift build -c release --product triad-bench >&2
  fi
  BIN=$(swift build -c release --show-bin-path)
fi
[ -x "$BIN/triad" ] && [ -x "$BIN/triad-bench" ] || die "release binaries missing in $BIN"

rm -rf "$WORK"; mkdir -p "$WORK" "$RESULTS_DIR"
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null; true; }
trap cleanup EXIT

# The server under test: embedded SQLite, MQTT in, AMQP out; no per-resource rate limit in the way.
(cd "$WORK" && TRIAD_ADMIN_TOKEN=$TOKEN exec "$BIN/triad" server --listen "$ADDR" --mqtt "$MQTT" --amqp "$AMQP" \
   --telemetry-rate 1000000 --telemetry-events "$MODE" --log-level warning) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://$ADDR/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "server died: $(tail -5 "$WORK/server.log")"
  sleep 0.2
done
curl -sf "http://$ADDR/readyz" >/dev/null || die "server not ready: $(curl -s "http://$ADDR/readyz")"
PREFIX=bench$(date +%s)
for i in $(seq 0 $((DEVICES - 1))); do
  printf '{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"%s-%d"},"spec":{"kind":"Device"}}' "$PREFIX" "$i" |
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' --data-binary @- "http://$ADDR/api/v1/resources" \
    || die "could not create devices"
done
sleep 6  # the ingest's resource cache sees the new devices

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }

# CPU time per message of each process, so the report shows where the two cores go: the brokers'
# and the server's from /proc (clock ticks, user + system), triad-bench's from its own output.
SVC_DIR=${TRIAD_SVC_DIR:-/tmp/triad-services}
MOSQUITTO_PID=$(cat "$SVC_DIR/mosquitto/mosquitto.pid")
RABBITMQ_PID=$(cat "$SVC_DIR/rabbitmq/rabbit.pid")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_snapshot() { echo "$(cpu_ticks "$SERVER_PID") $(cpu_ticks "$MOSQUITTO_PID") $(cpu_ticks "$RABBITMQ_PID")"; }

log "ceilings"
# The best of three floods: a ceiling is what the machine can do, and one flood of a few seconds
# can fall on a slow spell of the shared machine (20,941/s once, 34,329/s an hour earlier).
CPU_CEILING_BEFORE=$(cpu_snapshot)
: >"$WORK/mqtt-ceilings.jsonl"
for _ in 1 2 3; do "$BIN/triad-bench" mqtt-ceiling --mqtt "$MQTT" --messages 100000 >>"$WORK/mqtt-ceilings.jsonl"; done
CPU_CEILING_AFTER=$(cpu_snapshot)
MQTT_CEIL=$(python3 - "$WORK/mqtt-ceilings.jsonl" <<'PY'
import json, sys
floods = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
best = max(floods, key=lambda f: f["perSecond"])
best["floods"] = [f["perSecond"] for f in floods]
# The CPU table counts all three floods (the brokers' CPU was read around them all).
best["allMessages"] = sum(f["messages"] for f in floods)
best["allCpuSeconds"] = sum(f.get("cpuSeconds", 0) for f in floods)
print(json.dumps(best))
PY
)
AMQP_CEIL=$("$BIN/triad-bench" amqp-ceiling --amqp "$AMQP" --messages 100000)
echo "$MQTT_CEIL" >"$WORK/ceilings.jsonl"; echo "$AMQP_CEIL" >>"$WORK/ceilings.jsonl"
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
MQTT_RATE=$(field "$MQTT_CEIL" perSecond); AMQP_RATE=$(field "$AMQP_CEIL" perSecond)
log "mqtt ceiling $MQTT_RATE/s, amqp ceiling $AMQP_RATE/s"

SUSTAINED=0
: >"$WORK/ramp.jsonl"
for rate in $RATES; do
  r=$("$BIN/triad-bench" pipeline --mqtt "$MQTT" --amqp "$AMQP" --prefix "$PREFIX" --devices "$DEVICES" --rate "$rate" --seconds "$STEP" --drain 5)
  echo "$r" >>"$WORK/ramp.jsonl"
  log "ramp $rate/s: $r"
  ok=$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(int(r['lost']==0 and r['duplicates']==0 and r['achievedPerSecond']>=0.95*r['rate'] and r['p50ms']<100))" "$r")
  [ "$ok" = 1 ] || break
  SUSTAINED=$rate
done
[ "$SUSTAINED" -gt 0 ] || die "the pipeline lost samples even at the lowest rate (see $WORK/ramp.jsonl)"

HALF_RATE=$((SUSTAINED / 2))
log "half load: $HALF_RATE/s for $HALF s"
: >"$WORK/rss.txt"
( while kill -0 "$SERVER_PID" 2>/dev/null; do echo "$(date +%s) $(rss_kb)" >>"$WORK/rss.txt"; sleep 5; done ) &
SAMPLER=$!
CPU_HALF_BEFORE=$(cpu_snapshot)
HALF_RESULT=$("$BIN/triad-bench" pipeline --mqtt "$MQTT" --amqp "$AMQP" --prefix "$PREFIX" --devices "$DEVICES" --rate "$HALF_RATE" --seconds "$HALF" --drain 5)
CPU_HALF_AFTER=$(cpu_snapshot)
kill "$SAMPLER" 2>/dev/null || true
log "half load: $HALF_RESULT"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$RESULTS_DIR/$NAME-$STAMP.md
python3 - "$REPORT" "$MQTT_CEIL" "$AMQP_CEIL" "$WORK/ramp.jsonl" "$SUSTAINED" "$HALF_RESULT" "$WORK/rss.txt" "$STEP" "$HALF" "$MODE" \
  "$CPU_CEILING_BEFORE" "$CPU_CEILING_AFTER" "$CPU_HALF_BEFORE" "$CPU_HALF_AFTER" "$(getconf CLK_TCK)" <<'PY'
import json, sys
report, mqtt, amqp, ramp, sustained, half, rss, step, halfs, mode = sys.argv[1:11]
ceiling_before, ceiling_after, half_before, half_after = ([int(x) for x in a.split()] for a in sys.argv[11:15])
tick = 1 / int(sys.argv[15])
mqtt, amqp, half = json.loads(mqtt), json.loads(amqp), json.loads(half)
ramp = [json.loads(l) for l in open(ramp) if l.strip()]
rss = [int(l.split()[1]) for l in open(rss) if len(l.split()) == 2 and l.split()[1].isdigit()]
lower = min(mqtt["perSecond"], amqp["perSecond"])
sustained = int(sustained)
out = []
out.append("# Telemetry pipeline benchmark" + (" (batched telemetry events)" if mode == "batch" else "") + "\n")
out.append("probe → MQTT (Mosquitto) → Triad (embedded SQLite; history, status, forwarder) → AMQP (RabbitMQ) → an integrator's queue; 50 devices; loopback; everything on the same 2 cores. "
           + ("Server with `--telemetry-events batch`: one RabbitMQ message per resource per publication.\n" if mode == "batch" else "One RabbitMQ message per sample (the default).\n"))
out.append("| case | figure |\n|---|---|")
floods = ", ".join(f"{f:,.0f}" for f in mqtt.get("floods", [mqtt["perSecond"]]))
out.append(f"| ceiling: one subscriber's receive rate from Mosquitto (best of floods of {mqtt['messages']:,.0f}: {floods}) | {mqtt['perSecond']:,} msg/s |")
out.append(f"| ceiling: RabbitMQ confirmed publish rate (batches of {amqp['batch']}) | {amqp['perSecond']:,} msg/s |")
out.append(f"| pipeline sustained: nothing lost, no backlog (p50 < 100 ms), {step} s steps | {sustained:,} samples/s = {sustained/lower:.2f}× the lower ceiling ({sustained/mqtt['perSecond']:.2f}× Mosquitto's, {sustained/amqp['perSecond']:.2f}× RabbitMQ's) |")
out.append(f"| latency at half load ({half['rate']:,.0f}/s for {halfs} s) | p50 {half['p50ms']} ms, p99 {half['p99ms']} ms; lost {half['lost']:.0f}, duplicates {half['duplicates']:.0f} |")
if "toServerP99ms" in half:
    out.append(f"| p99 of each leg at half load | probe → Mosquitto → Triad {half['toServerP99ms']} ms; Triad → RabbitMQ → integrator {half['fromServerP99ms']} ms |")
if rss:
    out.append(f"| server RSS during half load (every 5 s) | first {rss[0]/1024:.1f} MiB, last {rss[-1]/1024:.1f} MiB, max {max(rss)/1024:.1f} MiB |")
out.append("\n## Ramp\n\n| rate/s | achieved/s | sent | received | lost | dup | p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in ramp:
    out.append(f"| {r['rate']:,.0f} | {r['achievedPerSecond']:,.0f} | {r['sent']:,.0f} | {r['received']:,.0f} | {r['lost']:,.0f} | {r['duplicates']:.0f} | {r['p50ms']} | {r['p99ms']} |")
# CPU per message (µs): server, Mosquitto, RabbitMQ from /proc; the probe and integrator (triad-bench).
def per_message(before, after, bench_seconds, messages):
    used = [(a - b) * tick for a, b in zip(after, before)] + [bench_seconds]
    return [u / messages * 1e6 for u in used]
if "cpuSeconds" in mqtt and "cpuSeconds" in half and half["received"] > 0:
    ceiling = per_message(ceiling_before, ceiling_after, mqtt["allCpuSeconds"], mqtt["allMessages"])
    pipeline = per_message(half_before, half_after, half["cpuSeconds"], half["received"])
    cores = 2
    out.append(f"\n## CPU per message\n\nCPU time (user + system) each process used, divided by the messages it carried: in the Mosquitto ceiling "
               f"(all its floods, {mqtt['allMessages']:,.0f} messages) and in the pipeline at half load. The ceiling's publisher and subscriber are one triad-bench process; "
               f"in the pipeline triad-bench is the probe and the integrator. {cores} cores give {cores * 1e6:,.0f} µs of CPU a second, so a case that needs "
               "N µs per message on this machine carries at most that divided by N messages a second, whatever each process does alone.\n")
    out.append("| process | ceiling µs/msg | pipeline µs/sample |\n|---|---:|---:|")
    # The ceiling involves Mosquitto and triad-bench only (the server and RabbitMQ idle meanwhile).
    ceiling = [None, ceiling[1], None, ceiling[3]]
    ceiling_total = ceiling[1] + ceiling[3]
    for name, c, p in zip(["Triad server", "Mosquitto", "RabbitMQ", "triad-bench"], ceiling, pipeline):
        out.append(f"| {name} | {'–' if c is None else f'{c:.1f}'} | {p:.1f} |")
    out.append(f"| **total** | **{ceiling_total:.1f}** | **{sum(pipeline):.1f}** |")
    out.append(f"\nAt these costs two cores carry at most {cores * 1e6 / ceiling_total:,.0f} msg/s in the ceiling and "
               f"{cores * 1e6 / sum(pipeline):,.0f} samples/s in the pipeline ({ceiling_total / sum(pipeline):.2f}× the ceiling's).")
if rss:
    out.append("\n## Server RSS (KiB) every 5 s at half load\n\n" + " ".join(str(x) for x in rss))
open(report, "w").write("\n".join(out) + "\n")
PY
cp "$REPORT" "$RESULTS_DIR/latest-$NAME.md"
cat "$REPORT"

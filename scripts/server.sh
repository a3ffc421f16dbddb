#!/usr/bin/env bash
# Runs `triad server` on its embedded default (SQLite under ./.triad, http://127.0.0.1:8080),
# first installing the C library the build links (librabbitmq, for the AMQP relay) if it is
# missing. Arguments are passed to `triad server`, e.g. --listen 127.0.0.1:9090.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
if [ ! -e /usr/include/amqp.h ] && [ ! -e /usr/include/rabbitmq-c/amqp.h ]; then
  echo "server.sh: installing librabbitmq-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq librabbitmq-dev >/dev/null
fi
exec swift run triad server "$@"

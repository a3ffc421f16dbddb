#!/usr/bin/env bash
# services.sh install|start|stop|status
#
# Runs the services Triad's tests and benchmarks need, privately, on loopback, without
# systemd (CI and dev machines have none). Each service has its own install_/start_/stop_/
# status_ functions; to add one (RabbitMQ, Mosquitto), write those four and list it in
# SERVICES below.
#
# Environment:
#   TRIAD_SVC_DIR   where the services keep their data    (default /tmp/triad-services)
#   TRIAD_PG_PORT   PostgreSQL port on 127.0.0.1          (default 55432, not 5432: the
#                   machine may run its own cluster there)
#   TRIAD_AMQP_PORT RabbitMQ AMQP port on 127.0.0.1       (default 55672)
#   TRIAD_AMQP_DIST_PORT  its Erlang distribution port    (default AMQP port + 20000, or
#                   AMQP port - 10000 when that would pass 65535, e.g. 45672 for 55672)
#   TRIAD_MQTT_PORT Mosquitto MQTT port on 127.0.0.1      (default 51883)
#   TRIAD_MQTT_DYNSEC_PORT  a second Mosquitto, with the dynamic-security plugin and no
#                   anonymous access, on 127.0.0.1 (default 51884); its admin's password is
#                   in $TRIAD_SVC_DIR/mosquitto-dynsec/admin.password (user triad-admin)
#   TRIAD_HA_PORT   Home Assistant HTTP port on 127.0.0.1 (default 58123)
#   TRIAD_HA_CACHE  where its venv is kept between runs     (default ~/.cache/triad/homeassistant)
#   CI              when "true", stop also kills epmd (shared by every Erlang node on the box)
set -euo pipefail

SVC_DIR=${TRIAD_SVC_DIR:-/tmp/triad-services}
PG_PORT=${TRIAD_PG_PORT:-55432}
PG_DIR=$SVC_DIR/pg
PG_DB=triad_test
AMQP_PORT=${TRIAD_AMQP_PORT:-55672}
# RabbitMQ's convention is AMQP + 20000 (5672 -> 25672), but 55672 + 20000 is no port: the node
# dies at boot with invalid_dist_port_range. The fallback also stays clear of 35672-35682,
# which rabbitmqctl itself uses as its client distribution ports.
if [ $((AMQP_PORT + 20000)) -le 65535 ]; then AMQP_DIST_DEFAULT=$((AMQP_PORT + 20000))
else AMQP_DIST_DEFAULT=$((AMQP_PORT - 10000)); fi
AMQP_DIST_PORT=${TRIAD_AMQP_DIST_PORT:-$AMQP_DIST_DEFAULT}
RMQ_DIR=$SVC_DIR/rabbitmq
# A second node on the machine (e.g. a test's own broker) needs its own name: they share epmd.
RMQ_NODE=${TRIAD_RABBITMQ_NODE:-rabbit@localhost}
MQTT_PORT=${TRIAD_MQTT_PORT:-51883}
MQTT_DIR=$SVC_DIR/mosquitto
MQTT_DYNSEC_PORT=${TRIAD_MQTT_DYNSEC_PORT:-51884}
MQTT_DYNSEC_DIR=$SVC_DIR/mosquitto-dynsec
MQTT_DYNSEC_PLUGIN=$(ls /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so 2>/dev/null | head -1 || true)
HA_PORT=${TRIAD_HA_PORT:-58123}
HA_VERSION=2024.3.3   # the newest that installs on Debian 12's Python 3.11
HA_DIR=$SVC_DIR/homeassistant
HA_CACHE=${TRIAD_HA_CACHE:-$HOME/.cache/triad/homeassistant}
SERVICES=(pg rabbitmq mosquitto homeassistant)

die() { echo "services.sh: error: $*" >&2; exit 1; }
log() { echo "services.sh: $*"; }

# --- shared helpers -------------------------------------------------------------------

# apt-get update is slow; run it at most once per invocation, and only if something is missing.
APT_UPDATED=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "installing $*"
  apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# Installs those of the named Debian packages that are not installed yet.
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"
}

# --- PostgreSQL -----------------------------------------------------------------------

# Newest installed server version's bin dir (Debian keeps them under /usr/lib/postgresql/N/bin).
pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && [ -x "$d/initdb" ] || die "PostgreSQL is not installed (run: $0 install)"
  echo "$d"
}

# PostgreSQL refuses to run as root, so everything server-side runs as user postgres.
as_pg() { runuser -u postgres -- "$@"; }

# psql over the private unix socket: local auth is trust, so no password is needed here.
pg_psql() { as_pg "$(pg_bin)/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

pg_running() {
  [ -f "$PG_DIR/data/PG_VERSION" ] || return 1
  as_pg "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

install_pg() {
  if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then return 0; fi
  apt_install postgresql
}

start_pg() {
  local bin; bin=$(pg_bin)
  mkdir -p "$PG_DIR"
  chown postgres:postgres "$PG_DIR"
  # The postgres user must be able to reach its data dir through every parent directory.
  as_pg test -w "$PG_DIR" || die "user postgres cannot write $PG_DIR (is a parent dir mode 700? set TRIAD_SVC_DIR)"

  if pg_running; then
    log "postgres already running in $PG_DIR/data"
  else
    if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
      # Password 'postgres' for TCP (scram, as a real deployment would use); trust on the socket.
      echo postgres > "$PG_DIR/pwfile"; chown postgres "$PG_DIR/pwfile"; chmod 600 "$PG_DIR/pwfile"
      as_pg "$bin/initdb" -D "$PG_DIR/data" -U postgres --pwfile="$PG_DIR/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
        >"$PG_DIR/initdb.log" 2>&1 || { tail -20 "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    # A port taken by someone else would make pg_ctl wait and then fail obscurely: say so up front.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then
      die "port $PG_PORT on 127.0.0.1 is already in use by another process (set TRIAD_PG_PORT)"
    fi
    # fsync=off: test data is throwaway, and it makes the suite much faster. max_connections:
    # the suite runs many servers at once, each with a pool of up to 16 connections; at the
    # default of 100 a busy moment refused connections ("too many clients already").
    if ! as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c max_connections=300" start >/dev/null; then
      tail -20 "$PG_DIR/server.log" >&2 || true
      die "postgres did not start (log: $PG_DIR/server.log)"
    fi
  fi

  # Ready means: a password login over TCP works, as the tests will do it.
  local i
  for i in $(seq 1 50); do
    PGPASSWORD=postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' \
      >/dev/null 2>&1 && break
    [ "$i" = 50 ] && die "postgres is not accepting password logins on 127.0.0.1:$PG_PORT"
    sleep 0.2
  done

  if [ "$(pg_psql -d postgres -c "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    pg_psql -d postgres -c "create database $PG_DB" >/dev/null || die "could not create database $PG_DB"
  fi
  log "postgres up: postgres://postgres:postgres@127.0.0.1:$PG_PORT/$PG_DB"
}

stop_pg() {
  if pg_running; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null || die "postgres did not stop"
    log "postgres stopped"
  else
    log "postgres not running"
  fi
}

status_pg() {
  if pg_running; then
    log "postgres running on 127.0.0.1:$PG_PORT (data $PG_DIR/data)"
  else
    log "postgres stopped"; return 1
  fi
}

# --- RabbitMQ -------------------------------------------------------------------------

# Run a RabbitMQ CLI against the private node. Use /usr/lib/rabbitmq/bin/*, not the /usr/sbin
# wrappers: as root those su to user rabbitmq with HOME=/var/lib/rabbitmq, whose Erlang cookie
# does not match the one our node created in $RMQ_DIR/home ("Erlang cookie not matching").
rmq() {
  local cmd=$1; shift
  env HOME="$RMQ_DIR/home" RABBITMQ_NODENAME="$RMQ_NODE" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT" \
    RABBITMQ_DIST_PORT="$AMQP_DIST_PORT" ERL_CRASH_DUMP="$RMQ_DIR/erl_crash.dump" \
    RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" RABBITMQ_LOG_BASE="$RMQ_DIR/log" \
    RABBITMQ_PID_FILE="$RMQ_DIR/rabbit.pid" RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins" \
    RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    ERL_EPMD_ADDRESS=127.0.0.1 "/usr/lib/rabbitmq/bin/$cmd" "$@"
}
# inet_dist_use_interface / ERL_EPMD_ADDRESS: the dist port and epmd would otherwise bind 0.0.0.0.
# ERL_CRASH_DUMP: a node that fails to boot would otherwise drop erl_crash.dump into the cwd.

# Check the pid file first: any rabbitmqctl call starts an epmd, which `stop` may just have killed.
rabbitmq_running() {
  local pid
  [ -x /usr/lib/rabbitmq/bin/rabbitmqctl ] || return 1
  pid=$(cat "$RMQ_DIR/rabbit.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null || return 1
  rmq rabbitmqctl -q status >/dev/null 2>&1
}

install_rabbitmq() {
  apt_ensure rabbitmq-server librabbitmq-dev amqp-tools
}

start_rabbitmq() {
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || die "RabbitMQ is not installed (run: $0 install)"
  if rabbitmq_running; then
    log "rabbitmq already running in $RMQ_DIR"
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$AMQP_PORT") 2>/dev/null; then
      die "port $AMQP_PORT on 127.0.0.1 is already in use by another process (set TRIAD_AMQP_PORT)"
    fi
    mkdir -p "$RMQ_DIR/home" "$RMQ_DIR/mnesia" "$RMQ_DIR/log"
    # Empty env file and plugin list: ignore the system-wide /etc/rabbitmq ones.
    : > "$RMQ_DIR/rabbitmq-env.conf"
    echo '[].' > "$RMQ_DIR/enabled_plugins"
    printf 'listeners.tcp.default = 127.0.0.1:%s\nlog.console = false\nlog.file.level = warning\n' \
      "$AMQP_PORT" > "$RMQ_DIR/rabbitmq.conf"
    rm -f "$RMQ_DIR/erl_crash.dump"
    # -detached returns at once (and spawns epmd).
    rmq rabbitmq-server -detached >"$RMQ_DIR/start.log" 2>&1 || { cat "$RMQ_DIR/start.log" >&2; die "rabbitmq-server did not start"; }
    # `rabbitmqctl wait` blocks until the app runs, but a node that died at boot never writes its
    # pid file, so wait in short slices and give up as soon as the VM leaves a crash dump.
    local i
    for i in $(seq 1 24); do
      rmq rabbitmqctl wait --timeout 5 "$RMQ_DIR/rabbit.pid" >>"$RMQ_DIR/start.log" 2>&1 && break
      if [ -e "$RMQ_DIR/erl_crash.dump" ] || [ "$i" = 24 ]; then
        grep -m1 '^Slogan' "$RMQ_DIR/erl_crash.dump" >&2 2>/dev/null || tail -5 "$RMQ_DIR/start.log" >&2
        die "rabbitmq did not come up (logs: $RMQ_DIR/log, $RMQ_DIR/start.log)"
      fi
    done
  fi
  log "rabbitmq up: amqp://guest:guest@127.0.0.1:$AMQP_PORT"
}

stop_rabbitmq() {
  if rabbitmq_running; then
    # Given the pid file, stop waits until the Erlang VM has exited, not just the app.
    rmq rabbitmqctl -q stop "$RMQ_DIR/rabbit.pid" >/dev/null || die "rabbitmq did not stop"
    log "rabbitmq stopped"
  else
    log "rabbitmq not running"
  fi
  # epmd outlives the node; kill it only in CI, since it serves every Erlang node on the machine.
  if [ "${CI:-}" = true ] && command -v epmd >/dev/null; then epmd -kill >/dev/null 2>&1 || true; fi
}

status_rabbitmq() {
  if rabbitmq_running; then
    log "rabbitmq running on 127.0.0.1:$AMQP_PORT (data $RMQ_DIR)"
  else
    log "rabbitmq stopped"; return 1
  fi
}

# --- Mosquitto ------------------------------------------------------------------------

mosquitto_running() {
  local pid
  pid=$(cat "$MQTT_DIR/mosquitto.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null
}

install_mosquitto() {
  apt_ensure mosquitto mosquitto-clients libmosquitto-dev
}

start_mosquitto() {
  command -v mosquitto >/dev/null || die "Mosquitto is not installed (run: $0 install)"
  if mosquitto_running; then
    log "mosquitto already running in $MQTT_DIR"
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null; then
      die "port $MQTT_PORT on 127.0.0.1 is already in use by another process (set TRIAD_MQTT_PORT)"
    fi
    # Started as root, mosquitto drops to user mosquitto: its pid and log files must be theirs.
    mkdir -p "$MQTT_DIR"
    chown mosquitto: "$MQTT_DIR" 2>/dev/null || chmod 777 "$MQTT_DIR"
    # Loopback only; anonymous is fine there (2.0 refuses it unless said). No persistence:
    # test brokers start empty.
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\npid_file %s\nlog_dest file %s\nmax_queued_messages 100000\nmax_inflight_messages 1000\n' \
      "$MQTT_PORT" "$MQTT_DIR/mosquitto.pid" "$MQTT_DIR/mosquitto.log" > "$MQTT_DIR/mosquitto.conf"
    rm -f "$MQTT_DIR/mosquitto.pid"
    mosquitto -c "$MQTT_DIR/mosquitto.conf" -d || die "mosquitto did not start (log: $MQTT_DIR/mosquitto.log)"
    local i
    for i in $(seq 1 100); do
      mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t '$SYS/broker/version' -C 1 -W 2 >/dev/null 2>&1 && break
      [ "$i" = 100 ] && { tail -5 "$MQTT_DIR/mosquitto.log" >&2 || true; die "mosquitto did not come up"; }
      sleep 0.1
    done
  fi
  log "mosquitto up: mqtt://127.0.0.1:$MQTT_PORT"
  start_mosquitto_dynsec
}

# The broker as production should run it: the dynamic-security plugin decides who may do what,
# nobody is anonymous. Its admin (triad-admin, a fresh random password per start) is what
# `triad server --mqtt-auth dynsec` manages it with.
mosquitto_dynsec_running() {
  local pid
  pid=$(cat "$MQTT_DYNSEC_DIR/mosquitto.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null
}

start_mosquitto_dynsec() {
  if mosquitto_dynsec_running; then
    log "mosquitto (dynamic security) already running in $MQTT_DYNSEC_DIR"
    return 0
  fi
  [ -n "$MQTT_DYNSEC_PLUGIN" ] || die "Mosquitto's dynamic-security plugin is not installed (package mosquitto)"
  if (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_DYNSEC_PORT") 2>/dev/null; then
    die "port $MQTT_DYNSEC_PORT on 127.0.0.1 is already in use by another process (set TRIAD_MQTT_DYNSEC_PORT)"
  fi
  rm -rf "$MQTT_DYNSEC_DIR"
  mkdir -p "$MQTT_DYNSEC_DIR"
  local password
  password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077; printf '%s\n' "$password" > "$MQTT_DYNSEC_DIR/admin.password")
  mosquitto_ctrl dynsec init "$MQTT_DYNSEC_DIR/dynamic-security.json" triad-admin "$password" >/dev/null \
    || die "mosquitto_ctrl could not write the dynamic-security file"
  chown -R mosquitto: "$MQTT_DYNSEC_DIR" 2>/dev/null || chmod -R a+rwX "$MQTT_DYNSEC_DIR"
  chown root: "$MQTT_DYNSEC_DIR/admin.password" 2>/dev/null || true
  printf 'listener %s 127.0.0.1\nallow_anonymous false\npersistence false\nplugin %s\nplugin_opt_config_file %s\npid_file %s\nlog_dest file %s\n' \
    "$MQTT_DYNSEC_PORT" "$MQTT_DYNSEC_PLUGIN" "$MQTT_DYNSEC_DIR/dynamic-security.json" \
    "$MQTT_DYNSEC_DIR/mosquitto.pid" "$MQTT_DYNSEC_DIR/mosquitto.log" > "$MQTT_DYNSEC_DIR/mosquitto.conf"
  mosquitto -c "$MQTT_DYNSEC_DIR/mosquitto.conf" -d || die "mosquitto (dynamic security) did not start (log: $MQTT_DYNSEC_DIR/mosquitto.log)"
  local i
  for i in $(seq 1 100); do
    mosquitto_sub -h 127.0.0.1 -p "$MQTT_DYNSEC_PORT" -u triad-admin -P "$password" -t '$SYS/broker/version' -C 1 -W 2 >/dev/null 2>&1 && break
    [ "$i" = 100 ] && { tail -5 "$MQTT_DYNSEC_DIR/mosquitto.log" >&2 || true; die "mosquitto (dynamic security) did not come up"; }
    sleep 0.1
  done
  log "mosquitto (dynamic security) up: mqtt://triad-admin:<$MQTT_DYNSEC_DIR/admin.password>@127.0.0.1:$MQTT_DYNSEC_PORT"
}

stop_mosquitto_dynsec() {
  if mosquitto_dynsec_running; then
    local pid i; pid=$(cat "$MQTT_DYNSEC_DIR/mosquitto.pid")
    kill "$pid"
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "mosquitto (dynamic security) stopped"
  fi
}

stop_mosquitto() {
  stop_mosquitto_dynsec
  if mosquitto_running; then
    local pid i; pid=$(cat "$MQTT_DIR/mosquitto.pid")
    kill "$pid"
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "mosquitto stopped"
  else
    log "mosquitto not running"
  fi
}

status_mosquitto() {
  if mosquitto_running; then
    log "mosquitto running on 127.0.0.1:$MQTT_PORT"
    if mosquitto_dynsec_running; then log "mosquitto (dynamic security) running on 127.0.0.1:$MQTT_DYNSEC_PORT"
    else log "mosquitto (dynamic security) stopped"; return 1; fi
  else
    log "mosquitto stopped"; return 1
  fi
}

# --- Home Assistant -------------------------------------------------------------------
# A real Home Assistant (PyPI, pinned) with its demo devices, for device probes and agents,
# plus an air purifier fan and a coffee machine switch (template entities over input helpers).
# The venv (~430 MB, ~30 s to install) lives in a cache dir and is reused; config, token and
# logs live under $SVC_DIR. The pins: 2024.3.3 is the newest release that installs on Python 3.11;
# without josepy<2 every HTTP request answers 500 (acme breaks on josepy 2).

HA_VENV=$HA_CACHE/venv

ha_running() {
  local pid
  pid=$(cat "$HA_DIR/hass.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null
}

install_homeassistant() {
  [ -x "$HA_VENV/bin/hass" ] && return 0
  local py=/usr/bin/python3
  apt_ensure python3-venv unzip curl
  log "installing Home Assistant $HA_VERSION into $HA_VENV (about 30 s)"
  mkdir -p "$HA_CACHE"
  "$py" -m venv "$HA_VENV" || die "cannot create a venv at $HA_VENV"
  "$HA_VENV/bin/pip" install -q -U pip wheel >/dev/null || die "pip upgrade failed"
  rm -rf "$HA_CACHE/dl"
  "$HA_VENV/bin/pip" download -q --no-deps -d "$HA_CACHE/dl" "homeassistant==$HA_VERSION" >/dev/null || die "cannot download homeassistant"
  # Home Assistant's own constraints (inside the wheel) keep its dependencies at the versions it
  # was released with; josepy<2 because acme breaks on josepy 2 and then every request is a 500.
  unzip -p "$HA_CACHE"/dl/homeassistant-"$HA_VERSION"-*.whl homeassistant/package_constraints.txt >"$HA_CACHE/constraints.txt"
  "$HA_VENV/bin/pip" install -q -c "$HA_CACHE/constraints.txt" "homeassistant==$HA_VERSION" "josepy<2" >/dev/null \
    || { rm -rf "$HA_VENV"; die "pip install homeassistant==$HA_VERSION failed"; }
}

ha_write_config() {
  mkdir -p "$HA_DIR/config"
  cat >"$HA_DIR/config/configuration.yaml" <<YAML
homeassistant: {name: Triad Test Home, latitude: 52.37, longitude: 4.89, elevation: 0,
                unit_system: metric, time_zone: UTC, currency: EUR, country: NL}
http: {server_host: 127.0.0.1, server_port: $HA_PORT}
api:
websocket_api:
onboarding:
demo:
logger: {default: warning}

# Two devices of our own, with unique_ids (so in the entity registry, renamable), backed by
# helpers. initial: on every helper, or HA restores their last state and a restart is not clean.
input_boolean:
  air_purifier_power: {name: Air purifier power, initial: off}
  coffee_machine_power: {name: Coffee machine power, initial: off}
input_number:
  air_purifier_percentage: {name: Air purifier percentage, min: 0, max: 100, step: 1, initial: 0}
input_select:
  air_purifier_preset: {name: Air purifier preset, options: [auto, sleep, turbo], initial: auto}
fan:
  - platform: template
    fans:
      air_purifier:
        unique_id: triad-air-purifier
        friendly_name: Air purifier
        value_template: "{{ states('input_boolean.air_purifier_power') }}"
        # 0 while off, as HA's own fans report; the helper keeps the speed for the next turn_on.
        percentage_template: >-
          {{ states('input_number.air_purifier_percentage') | int(0)
             if is_state('input_boolean.air_purifier_power', 'on') else 0 }}
        preset_mode_template: "{{ states('input_select.air_purifier_preset') }}"
        preset_modes: [auto, sleep, turbo]
        turn_on:
          - service: input_boolean.turn_on
            target: {entity_id: input_boolean.air_purifier_power}
        turn_off:
          - service: input_boolean.turn_off
            target: {entity_id: input_boolean.air_purifier_power}
        # With a value_template the fan does not switch itself on: the actions must. 0 is off,
        # like turn_off it keeps the last speed.
        set_percentage:
          - if: "{{ percentage | int(0) > 0 }}"
            then:
              - service: input_number.set_value
                target: {entity_id: input_number.air_purifier_percentage}
                data: {value: "{{ percentage }}"}
              - service: input_boolean.turn_on
                target: {entity_id: input_boolean.air_purifier_power}
            else:
              - service: input_boolean.turn_off
                target: {entity_id: input_boolean.air_purifier_power}
        set_preset_mode:
          - service: input_select.select_option
            target: {entity_id: input_select.air_purifier_preset}
            data: {option: "{{ preset_mode }}"}
          - service: input_boolean.turn_on
            target: {entity_id: input_boolean.air_purifier_power}
switch:
  - platform: template
    switches:
      coffee_machine:
        unique_id: triad-coffee-machine
        friendly_name: Coffee machine
        value_template: "{{ states('input_boolean.coffee_machine_power') }}"
        turn_on:
          - service: input_boolean.turn_on
            target: {entity_id: input_boolean.coffee_machine_power}
        turn_off:
          - service: input_boolean.turn_off
            target: {entity_id: input_boolean.coffee_machine_power}
YAML
}

# A long-lived token, made once per config dir through onboarding: the onboarding user's auth
# code (accepted only once), an access token, then a long-lived token over the WebSocket API.
ha_token() {
  "$HA_VENV/bin/python" - "http://127.0.0.1:$HA_PORT" >"$HA_DIR/token.new" <<'PY' || { rm -f "$HA_DIR/token.new"; return 1; }
import asyncio, sys, aiohttp
URL = sys.argv[1]; CID = URL + "/"
async def main():
    async with aiohttp.ClientSession() as s:
        async def post(path, token=None, **kw):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with s.post(URL + path, headers=headers, **kw) as r:
                assert r.status < 300, (path, r.status, await r.text())
                return await r.json()
        code = (await post("/api/onboarding/users", json={"client_id": CID, "name": "Triad",
                "username": "triad", "password": "triad-test-pass", "language": "en"}))["auth_code"]
        access = (await post("/auth/token", data={"grant_type": "authorization_code", "code": code, "client_id": CID}))["access_token"]
        await post("/api/onboarding/analytics", access, json={})
        await post("/api/onboarding/integration", access, json={"client_id": CID, "redirect_uri": CID})
        async with s.ws_connect(URL + "/api/websocket") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "auth", "access_token": access})
            assert (await ws.receive_json())["type"] == "auth_ok"
            await ws.send_json({"id": 1, "type": "auth/long_lived_access_token", "client_name": "triad-tests", "lifespan": 3650})
            reply = await ws.receive_json()
            assert reply["success"], reply
            print(reply["result"])
asyncio.run(main())
PY
  mv "$HA_DIR/token.new" "$HA_DIR/token"; chmod 600 "$HA_DIR/token"
}

start_homeassistant() {
  [ -x "$HA_VENV/bin/hass" ] || die "Home Assistant is not installed (run: $0 install homeassistant)"
  if ha_running; then
    log "homeassistant already running in $HA_DIR"
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$HA_PORT") 2>/dev/null; then
      die "port $HA_PORT on 127.0.0.1 is already in use by another process (set TRIAD_HA_PORT)"
    fi
    # Rewritten on every start, so a config dir from an older script gets today's devices;
    # .storage/ (the onboarded user, the token, the entity registry) is kept.
    ha_write_config
    # Demo entities are not restored across restarts; helpers would be: start clean.
    rm -f "$HA_DIR/config/.storage/core.restore_state"
    nohup "$HA_VENV/bin/hass" -c "$HA_DIR/config" >"$HA_DIR/hass.out" 2>&1 </dev/null &
    echo $! >"$HA_DIR/hass.pid"
    local i
    # The first start pip-installs runtime requirements (~30 s); later ones take ~2 s.
    for i in $(seq 1 600); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HA_PORT/api/")" = 401 ] && break
      ha_running || { tail -20 "$HA_DIR/hass.out" >&2; die "homeassistant died at start (log: $HA_DIR/hass.out)"; }
      [ "$i" = 600 ] && die "homeassistant did not answer on 127.0.0.1:$HA_PORT"
      sleep 0.25
    done
  fi
  [ -s "$HA_DIR/token" ] || ha_token || die "could not create a Home Assistant token"
  # HTTP answers before the integrations are loaded: wait until the core is RUNNING.
  for i in $(seq 1 480); do
    curl -s -H "Authorization: Bearer $(cat "$HA_DIR/token")" "http://127.0.0.1:$HA_PORT/api/config" | grep -q '"state":"RUNNING"' && break
    [ "$i" = 480 ] && die "homeassistant is not RUNNING (log: $HA_DIR/hass.out)"
    sleep 0.25
  done
  log "homeassistant up: http://127.0.0.1:$HA_PORT (token in $HA_DIR/token)"
}

stop_homeassistant() {
  if ha_running; then
    local pid i; pid=$(cat "$HA_DIR/hass.pid")
    kill -TERM "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    log "homeassistant stopped"
  else
    log "homeassistant not running"
  fi
}

status_homeassistant() {
  if ha_running; then log "homeassistant running on 127.0.0.1:$HA_PORT"; else log "homeassistant stopped"; return 1; fi
}

# --- ports ----------------------------------------------------------------------------

# The services' ports lie in Linux's ephemeral range (32768-60999): on a busy machine the kernel
# may give one to an outgoing connection just before the service binds it (RabbitMQ's
# distribution port failed so right after a benchmark's thousands of connections). Reserving
# them keeps the kernel from handing them out; explicit binds still work. Not persistent, and
# skipped where the setting is read-only (containers).
reserve_ports() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports current p missing=()
  [ -w "$f" ] || return 0
  current=",$(cat "$f" 2>/dev/null),"
  for p in "$@"; do [[ $current == *",$p,"* ]] || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  local list
  list=$(IFS=,; echo "${missing[*]}")
  if [ "$current" = ",," ]; then echo "$list" > "$f"; else echo "${current:1:-1},$list" > "$f"; fi 2>/dev/null \
    && log "reserved ports ${missing[*]} (kernel ephemeral range; until reboot)" || true
}

service_ports() {
  case $1 in
    pg) echo "$PG_PORT" ;;
    rabbitmq) echo "$AMQP_PORT $AMQP_DIST_PORT" ;;
    mosquitto) echo "$MQTT_PORT $MQTT_DYNSEC_PORT" ;;
    homeassistant) echo "$HA_PORT" ;;
  esac
}

# --- dispatch -------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and uses runuser)"

usage() { echo "usage: $0 install|start|stop|status [${SERVICES[*]}]" >&2; exit 2; }
verb=${1:-}
[ $# -gt 0 ] && shift
# Optional service names after the verb; default: all of them.
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${SERVICES[@]}")
for t in "${targets[@]}"; do [[ " ${SERVICES[*]} " == *" $t "* ]] || usage; done

rc=0
case "$verb" in
  install) for s in "${targets[@]}"; do "install_$s"; done ;;
  start)
    # shellcheck disable=SC2046 # word splitting of the port lists is intended
    reserve_ports $(for s in "${targets[@]}"; do service_ports "$s"; done)
    for s in "${targets[@]}"; do "start_$s"; done ;;
  # Stop in reverse order, so later services that may depend on earlier ones go first.
  stop)    for ((i=${#targets[@]}-1; i>=0; i--)); do "stop_${targets[i]}"; done ;;
  # Exit 3 when anything is down, like systemctl status.
  status)  for s in "${targets[@]}"; do "status_$s" || rc=3; done ;;
  *) usage ;;
esac
exit "$rc"

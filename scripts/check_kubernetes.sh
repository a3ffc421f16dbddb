#!/usr/bin/env bash
# check_kubernetes.sh — deploy/kubernetes/ as a cluster would take it, checked offline:
#   1. `kubectl kustomize` builds it (with secrets.env.example standing in for secrets.env), and
#      every object passes `kubernetes-validate --strict` (PyPI; installed when missing);
#   2. the Deployment's command line and environment are settings `triad server` accepts: every
#      TRIAD_* name is one it reads, and `triad server … --check` passes with those values;
#   3. a probe rendered by `triad probe render` (from a live server) passes the same validation,
#      and the server answers the Deployment's readiness and liveness paths without a token;
#   4. broken inputs fail each check: an invalid manifest, an unknown setting, a bad value.
# Knobs: TRIAD_BIN (default .build/debug/triad), K8S_CHECK_PORT (default 18399).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TRIAD_BIN=${TRIAD_BIN:-$ROOT/.build/debug/triad}
PORT=${K8S_CHECK_PORT:-18399}
say() { echo "check_kubernetes.sh: $*"; }
fail() { echo "check_kubernetes.sh: error: $*" >&2; exit 1; }

command -v kubectl >/dev/null || fail "kubectl not found (it builds the Kustomize directory offline)"
if ! command -v kubernetes-validate >/dev/null; then
  say "installing kubernetes-validate"
  python3 -m pip install -q --break-system-packages kubernetes-validate 2>/dev/null || python3 -m pip install -q kubernetes-validate
fi
command -v kubernetes-validate >/dev/null || fail "kubernetes-validate is still not on PATH"
[ -x "$TRIAD_BIN" ] || fail "no triad binary at $TRIAD_BIN (swift build first)"

WORK=$(mktemp -d)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# Builds a copy of deploy/kubernetes (after $2, a command run in the copy, may break it) to $1.
build() {
  local out=$1 edit=${2:-true} dir
  dir=$(mktemp -d -p "$WORK")
  cp -r deploy/kubernetes/. "$dir/"
  cp "$dir/secrets.env.example" "$dir/secrets.env"
  (cd "$dir" && eval "$edit")
  kubectl kustomize "$dir" > "$out"
}

# Every object valid (kubernetes-validate exits non-zero on any failure).
validate() { kubernetes-validate --strict --quiet "$@"; }

# The Deployment's settings as `triad server` sees them: names it reads, values it accepts.
check_settings() {
  python3 - "$1" "$TRIAD_BIN" <<'PY'
import base64, os, re, subprocess, sys, yaml
objects = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
triad = sys.argv[2]
deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "triad")
container = deployment["spec"]["template"]["spec"]["containers"][0]
env = {}
for source in container.get("envFrom", []):
    ref = source.get("configMapRef") or source.get("secretRef")
    obj = next(o for o in objects if o["kind"] in ("ConfigMap", "Secret") and o["metadata"]["name"] == ref["name"])
    if obj["kind"] == "Secret":
        env.update({k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()})
    else:
        env.update(obj.get("data", {}))
for item in container.get("env", []):
    env[item["name"]] = item.get("value", "")
help_text = subprocess.run([triad, "server", "--help"], capture_output=True, text=True, check=True).stdout
known = set(re.findall(r"\b(TRIAD_[A-Z_]+)\b", help_text))
unknown = sorted(k for k in env if k not in known)
if unknown:
    sys.exit(f"settings the server does not read: {', '.join(unknown)} (it reads {', '.join(sorted(known))})")
args = container.get("args", [])
if not args or args[0] != "server":
    sys.exit(f"the container must run `triad server`, not {args}")
run = subprocess.run([triad, *args, "--check"], capture_output=True, text=True,
                     env={"PATH": os.environ["PATH"], **env})
if run.returncode != 0 or "settings are valid" not in run.stdout:
    sys.exit(f"triad server refuses the Deployment's settings: {(run.stderr or run.stdout).strip()}")
print(f"{len(env)} settings, `{' '.join(args)}`: accepted")
PY
}

# Must fail: $1 describes it, the rest is the command.
expect_failure() {
  local what=$1
  shift
  if "$@" >"$WORK/refused.log" 2>&1; then fail "$what was accepted"; fi
  say "refused as it should be: $what ($(grep -v -e '^$' -e "See '" -e '^Usage' "$WORK/refused.log" | tail -1 | cut -c1-160))"
}

say "building deploy/kubernetes and validating every object"
build "$WORK/triad.yaml"
validate "$WORK/triad.yaml"
say "$(grep -c '^kind:' "$WORK/triad.yaml") objects valid: $(grep '^kind:' "$WORK/triad.yaml" | cut -d' ' -f2 | tr '\n' ' ')"
accepted=$(check_settings "$WORK/triad.yaml")
say "$accepted"

# A live server: the paths the Deployment probes answer without a token, and a rendered probe.
TOKEN="k8s-check-admin-token-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
TRIAD_ADMIN_TOKEN=$TOKEN "$TRIAD_BIN" server --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; fail "the server did not start"; }
  sleep 0.1
done
for path in /healthz /readyz; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT$path")
  [ "$code" = 200 ] || fail "$path answered $code without a token (the Deployment's probes send none)"
done
export TRIAD_SERVER="http://127.0.0.1:$PORT" TRIAD_TOKEN=$TOKEN
"$TRIAD_BIN" apply -f examples/pantry.yaml >/dev/null
"$TRIAD_BIN" probe render coffee-3f --namespace triad >"$WORK/probe.yaml"
validate "$WORK/probe.yaml"
say "the rendered probe of coffee-3f is a valid $(grep '^kind:' "$WORK/probe.yaml" | cut -d' ' -f2)"

# Each check must be able to fail.
build "$WORK/broken.yaml" "sed -i 's/replicas: 2/replicas: two/' deployment.yaml"
expect_failure "a Deployment with replicas: two" validate "$WORK/broken.yaml"
build "$WORK/unknown.yaml" "echo TRIAD_LISTN=0.0.0.0:8080 >> settings.env"
expect_failure "a setting the server does not read" check_settings "$WORK/unknown.yaml"
build "$WORK/bad-value.yaml" "sed -i 's/TRIAD_SHUTDOWN_GRACE=10/TRIAD_SHUTDOWN_GRACE=0/' settings.env"
expect_failure "a shutdown grace of 0" check_settings "$WORK/bad-value.yaml"
say "deploy/kubernetes and rendered probes are valid"

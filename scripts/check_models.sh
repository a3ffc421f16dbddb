#!/usr/bin/env bash
# check_models.sh — model-check the CV live-upgrade retirement protocol (models/cv_retirement.pml)
# with spin: the CV model must have no error over its whole state space (safety, then liveness
# under weak fairness), every reachability witness must be reached, and every broken variant
# (negative control) must be caught. Installs spin (Debian package `spin`) and gcc if missing.
#
#   bash scripts/check_models.sh            # all checks, one line each; exit 0 iff all pass
#   KEEP=1 bash scripts/check_models.sh     # keep the work directory (pan output, trails)
#   NT=3 NCALLS=3 bash scripts/check_models.sh   # bounds: transactions, sub-calls each
#   MODEL=path/to/variant.pml bash scripts/check_models.sh   # another copy of the model
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL=${MODEL:-$ROOT/models/cv_retirement.pml}
NT=${NT:-3}
NCALLS=${NCALLS:-3}
MEMLIM=${MEMLIM:-1024}     # MB pan may use; a search that hits it fails the check
DEPTH=${DEPTH:-200000}     # pan -m; "max search depth too small" fails the check

die() { echo "check_models.sh: error: $*" >&2; exit 1; }
[ -f "$MODEL" ] || die "model not found: $MODEL"

# ---- tools ---------------------------------------------------------------------------------
apt_install() {
  local as_root=()
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && as_root=(sudo); } \
    || die "$* missing and not root (install it: apt-get install -y $*)"
  echo "check_models.sh: installing $* (apt-get)"
  if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; then
    "${as_root[@]}" apt-get update -qq >/dev/null
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}
command -v spin >/dev/null 2>&1 || apt_install spin
command -v gcc >/dev/null 2>&1 || apt_install gcc
command -v spin >/dev/null 2>&1 || die "spin still not on PATH after installing"
command -v gcc >/dev/null 2>&1 || die "gcc still not on PATH after installing"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check_models.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
  trap 'echo "check_models.sh: work directory kept: $WORK"' EXIT
else
  trap 'rm -rf "$WORK"' EXIT
fi

FAILED=0
T0=$(date +%s.%N)

# field VALUE-REGEX FILE: first match of an extended regex's first group, or "?"
field() { sed -nE "s/$1/\\1/p" "$2" | head -n 1 | grep . || echo "?"; }

# run NAME MODE EXPECT [spin -D flags...]
#   MODE   safety | liveness (pan -a -f: acceptance cycles under weak fairness)
#   EXPECT pass              errors: 0, whole state space explored
#          assert:REGEX      an assertion violation whose text matches REGEX
#          cycle             an acceptance cycle (the LTL property fails)
run() {
  local name=$1 mode=$2 expect=$3; shift 3
  local dir=$WORK/$name
  mkdir -p "$dir"
  cp "$MODEL" "$dir/model.pml"
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  (
    cd "$dir"
    spin -DNT="$NT" -DNCALLS="$NCALLS" "$@" -a model.pml >spin.out 2>&1 || exit 3
    if [ "$mode" = safety ]; then
      gcc -O2 -DSAFETY -DMEMLIM="$MEMLIM" -o pan pan.c >gcc.out 2>&1 || exit 4
      ./pan -m"$DEPTH" >pan.out 2>&1 || true
    else
      # -DNFAIR=k allows 4k-2 processes: init, NT transactions, 6 others and the claim
      gcc -O2 -DMEMLIM="$MEMLIM" -DNFAIR=$(( (NT + 13) / 4 )) -o pan pan.c >gcc.out 2>&1 || exit 4
      ./pan -a -f -m"$DEPTH" >pan.out 2>&1 || true
    fi
  ) || rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 3 ]; then
      echo "FAIL  $name: spin -a failed: $(tail -n 3 "$dir/spin.out" | tr '\n' ' ')"
    else
      echo "FAIL  $name: gcc failed: $(tail -n 3 "$dir/gcc.out" | tr '\n' ' ')"
    fi
    FAILED=1; return
  fi
  t1=$(date +%s.%N)
  local out=$dir/pan.out
  local errors states depth ptime wall
  errors=$(field '.*errors: ([0-9]+).*' "$out")
  states=$(field '^ *([0-9.e+]+) states, stored.*' "$out")
  depth=$(field '.*depth reached ([0-9]+).*' "$out")
  ptime=$(field '^pan: elapsed time ([0-9.e+-]+) seconds.*' "$out")
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  local figures="$states states, depth $depth, pan ${ptime} s, ${wall} s with compiling"

  local incomplete=""
  grep -q "max search depth too small" "$out" && incomplete="max search depth too small (raise DEPTH)"
  grep -qE "reached -DMEMLIM bound|out of memory" "$out" && incomplete="out of memory (raise MEMLIM)"
  grep -q "too many processes" "$out" && incomplete="too many processes for -DNFAIR"
  if [ "$mode" = liveness ] && ! grep -qE 'never claim[[:space:]]+\+' "$out"; then
    incomplete="no LTL property was checked"
  fi

  case $expect in
    pass)
      if [ "$errors" = 0 ] && [ -z "$incomplete" ] && ! grep -q "Search not completed" "$out"; then
        echo "PASS  $name: 0 errors, whole state space; $figures"
      else
        local why=${incomplete:-"$errors error(s): $(grep -m1 -E 'assertion violated|acceptance cycle|invalid end state|pan:1:' "$out" || true)"}
        [ "$errors" = "?" ] && why="no result from pan: $(tail -n 2 "$out" | tr '\n' ' ')"
        echo "FAIL  $name: $why; $figures (KEEP=1 keeps pan's output)"
        FAILED=1
      fi ;;
    assert:*)
      local re=${expect#assert:} hit
      hit=$(grep -m1 -E 'pan:1: assertion violated' "$out" || true)
      if [ -n "$hit" ] && printf '%s' "$hit" | grep -qE -- "$re"; then
        echo "PASS  $name: violation found as required: ${hit#pan:1: }; $figures"
      else
        echo "FAIL  $name: expected an assertion violation matching /$re/, got: ${hit:-${incomplete:-errors: $errors}}; $figures"
        FAILED=1
      fi ;;
    cycle)
      if grep -q "acceptance cycle" "$out" && [ "$errors" != 0 ]; then
        echo "PASS  $name: liveness violation found as required: $(grep -m1 'acceptance cycle' "$out" | sed 's/^pan:1: //'); $figures"
      else
        echo "FAIL  $name: expected an acceptance cycle, got errors: $errors ${incomplete}; $figures"
        FAILED=1
      fi ;;
  esac
}

# the property assertions of the model (any of them may be the one a broken variant trips)
PROP='\(visited!=3\)|\(active1==0\)|\(pin!=1\)|!\(\(\(dest==1\)&&retired\)\)'

echo "spin $(spin -V | awk '{print $3}'), model $MODEL, NT=$NT transactions x NCALLS=$NCALLS sub-calls"
# the protocol: no error anywhere, and eventual retirement (and completion) under weak fairness
run cv-safety              safety   pass
run cv-liveness            liveness pass -DLIVENESS
# the situations the protocol must handle occur (the pass above is not vacuous)
run witness-503-retry      safety   'assert:\(1!=1\)' -DWITNESS=1
run witness-pinned-after-block safety 'assert:\(2!=2\)' -DWITNESS=2
run witness-diffset-nonempty safety 'assert:\(3!=3\)' -DWITNESS=3
run witness-refused-by-retired safety 'assert:\(4!=4\)' -DWITNESS=4
run witness-spans-retirement safety 'assert:\(5!=5\)' -DWITNESS=5
# negative controls: each broken variant must be caught
run neg-rolling            safety   "assert:$PROP" -DSTRATEGY_ROLLING
run neg-skip-block         safety   "assert:$PROP" -DSKIP_BLOCK
run neg-record-at-end      safety   "assert:$PROP" -DRECORD_AT_END
run neg-skip-pin-wait      safety   "assert:$PROP" -DSKIP_PIN_WAIT
run neg-lock-on-command    safety   "assert:$PROP" -DLOCK_ON_COMMAND
run neg-retry-same-cluster liveness cycle -DLIVENESS -DRETRY_SAME_CLUSTER

TOTAL=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ "$FAILED" -ne 0 ]; then
  echo "check_models.sh: FAILED (${TOTAL} s)" >&2
  exit 1
fi
echo "check_models.sh: all checks passed (${TOTAL} s)"

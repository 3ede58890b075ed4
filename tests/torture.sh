#!/usr/bin/env bash
# Kill -9 at random moments of `run`, `data import`, `gc --apply` and `reindex`, then check
# that the home is whole: `verify` passes, a rerun finishes, and the finished study is
# bit-identical to one that was never interrupted (same run ids, metrics and output objects).
#
#   tests/torture.sh [TRIALS] [SEED]      (defaults: 3 trials per command, seed from the clock)
#
# TORTURE_ONLY=run|import|gc|reindex limits it to one command. A failed trial's folder is
# kept (its path is printed).
#
# Uses target/release/ktrack if it exists, else target/debug/ktrack (build first). Bounded:
# every command runs under `timeout`. Prints one line per trial and a closing
# `N passed, N failed` line; exits non-zero when any trial failed.
set -uo pipefail
cd "$(dirname "$0")/.."

TRIALS=${1:-3}
SEED=${2:-$(date +%s)}
RANDOM=$SEED
BIN=${KTRACK_BIN:-}
if [ -z "$BIN" ]; then
  if [ -x target/release/ktrack ]; then BIN=$PWD/target/release/ktrack; else BIN=$PWD/target/debug/ktrack; fi
fi
[ -x "$BIN" ] || { echo "no ktrack binary at $BIN; build it first" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ktrack-torture.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export KTRACK_NOW=2026-01-01T00:00:00Z
passed=0
failed=0
echo "torture: $TRIALS trial(s) per command, seed $SEED, binary $BIN"

# A small study: two synthetic cohorts, one SimCLR pretraining, probes and fine-tunes.
write_study() {
  local dir=$1
  mkdir -p "$dir/datasets" "$dir/experiments"
  for pair in oai-like:24 most-like:10 nyu-like:16; do
    local kind=${pair%%:*} patients=${pair##*:} labels=""
    [ "$kind" = nyu-like ] || labels=$'kl = "kl"\nincidence_4y = "incidence_4y"\nprogression_4y = "progression_4y"'
    cat > "$dir/datasets/$kind.toml" <<TOML
name = "$kind"
manifest = "data/$kind/manifest.csv"
image_root = "data/$kind"

[columns]
sample_id = "sample_id"
patient_id = "patient_id"
side = "side"
visit = "visit_month"
image = "image_path"
$labels

[synth]
kind = "$kind"
patients = $patients
image_size = 32
seed = 3
TOML
  done
  cat > "$dir/experiments/t.toml" <<'TOML'
name = "t"

[cohorts]
train = "../datasets/oai-like.toml"
external = ["../datasets/most-like.toml"]

[split]
train = 0.6
val = 0.2
test = 0.2

[fractions]
values = [0.5, 1.0]

[pretrain.img]
method = "simclr"
data = ["train", "../datasets/nyu-like.toml"]
epochs = 3
batch_size = 16
projection_dim = 16

[inits.random]
kind = "random"

[inits.img]
kind = "pretrain"
pretrain = "img"

[grid]
inits = ["random", "img"]
tasks = ["kl"]
protocols = ["linear", "finetune"]
fractions = [0.5, 1.0]
seeds = [0]

[train]
arch = "resnet-tiny"
image_size = 32

[train.linear]
epochs = 4
batch_size = 16

[train.finetune]
epochs = 4
batch_size = 16

[run]
threads = 2
TOML
}

k() { local home=$1; shift; KTRACK_HOME=$home timeout 600 "$BIN" --no-progress -q "$@"; }

# What must not change: run ids, statuses, metrics, every output object but the log, and
# the curves but their timings.
fingerprint() {
  local home=$1
  k "$home" status --format json | python3 -c '
import json, sys, os
home = sys.argv[1]
out = []
for r in sorted(json.load(sys.stdin), key=lambda r: r["id"]):
    outputs = {}
    if r["record"]:
        rec = json.load(open(os.path.join(home, "objects", r["record"][:2], r["record"][2:])))
        outputs = {k: v for k, v in rec["outputs"].items() if k not in ("log", "curves")}
        # Curves hold wall-clock seconds; every other number in them must match.
        c = rec["outputs"].get("curves")
        if c:
            curves = json.load(open(os.path.join(home, "objects", c[:2], c[2:])))
            outputs["curves"] = [{k: v for k, v in e.items() if k != "seconds"} for e in curves]
    metrics = sorted((m["eval"], m["metric"], repr(m["value"])) for m in r["metrics"])
    out.append((r["id"], r["status"], metrics, sorted(outputs.items())))
print(json.dumps(out))' "$home"
}

ONLY=${TORTURE_ONLY:-}
want_op() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
KEPT=${TMPDIR:-/tmp}/ktrack-torture-failed-$SEED

verdict() {  # name, ok(0/1), detail; uses $dir
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "ok   $1"; rm -rf "$dir"; return; fi
  failed=$((failed + 1))
  mkdir -p "$KEPT" && cp -a "$dir" "$KEPT/" 2>/dev/null
  echo "FAIL $1: $3 (kept in $KEPT/$(basename "$dir"))"
}

# kill -9 `ktrack ARGS` (with KTRACK_HOME=home) after a random delay in [0, max_ms) ms. The
# background job is the ktrack process itself (no wrapper), so the kill reaches it.
kill_at_random() {
  local max_ms=$1 home=$2; shift 2
  local delay=$((RANDOM % max_ms))
  KTRACK_HOME=$home "$BIN" --no-progress -q "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    echo "$delay"
  else
    wait "$pid" 2>/dev/null
    echo "$delay (finished first)"
  fi
}

# The reference: the same study, never interrupted.
REF=$WORK/ref
write_study "$REF"
t0=$(date +%s%N)
( cd "$REF" && k "$REF/home" run experiments/t.toml --no-compare >/dev/null ) || { echo "the reference study failed" >&2; exit 1; }
run_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
want=$(fingerprint "$REF/home")
# Unreachable objects for the gc trials: another home's cohorts (nothing in REF refers to them).
STRAY=$WORK/stray
write_study "$STRAY"
sed -i 's/^patients = 16$/patients = 400/' "$STRAY/datasets/nyu-like.toml"
( cd "$STRAY" && k "$STRAY/home" data synth datasets/nyu-like.toml datasets/most-like.toml >/dev/null 2>&1 \
    && k "$STRAY/home" data import datasets/nyu-like.toml >/dev/null 2>&1 \
    && k "$STRAY/home" data import datasets/most-like.toml >/dev/null 2>&1 ) || { echo "the stray cohorts failed" >&2; exit 1; }
with_strays() { cp -a "$REF" "$1" && cp -rn "$STRAY/home/objects/." "$1/home/objects/"; }

with_strays "$WORK/calib-gc"
t0=$(date +%s%N)
k "$WORK/calib-gc/home" gc --apply --min-age 0 >/dev/null 2>&1
gc_ms=$(( ($(date +%s%N) - t0) / 1000000 + 1 ))
rm -rf "$WORK/calib-gc"

cp -a "$REF" "$WORK/calib"
t0=$(date +%s%N)
k "$WORK/calib/home" reindex >/dev/null 2>&1
reindex_ms=$(( ($(date +%s%N) - t0) / 1000000 + 1 ))
( cd "$WORK/calib" && t0=$(date +%s%N) && k "$WORK/calib/fresh" data import datasets/oai-like.toml >/dev/null 2>&1 \
    && echo $(( ($(date +%s%N) - t0) / 1000000 + 1 )) > "$WORK/import_ms" )
import_ms=$(cat "$WORK/import_ms" 2>/dev/null || echo 1500)
rm -rf "$WORK/calib"
echo "reference study: ${run_ms} ms; import: ${import_ms} ms; gc: ${gc_ms} ms; reindex: ${reindex_ms} ms"

for trial in $(seq 1 "$TRIALS"); do
  # run: killed at a random moment, then verify, rerun (perhaps killed again), compare.
  if want_op run; then
  dir=$WORK/run-$trial
  write_study "$dir"
  at=$(cd "$dir" && kill_at_random "$run_ms" "$dir/home" run experiments/t.toml --no-compare)
  v=$(k "$dir/home" verify 2>&1); vok=$?
  at2=$(cd "$dir" && kill_at_random "$run_ms" "$dir/home" run experiments/t.toml --no-compare)
  x=$(cd "$dir" && k "$dir/home" run experiments/t.toml --no-compare 2>&1 >/dev/null); rok=$?
  got=$(fingerprint "$dir/home")
  if [ $vok != 0 ]; then verdict "run #$trial (killed at $at ms)" 1 "verify: $v"
  elif [ $rok != 0 ]; then verdict "run #$trial (killed at $at, $at2 ms)" 1 "the rerun failed: $x"
  elif [ "$got" != "$want" ]; then
    diff <(echo "$want" | python3 -c 'import json,sys; [print(json.dumps(r)) for r in json.load(sys.stdin)]') \
         <(echo "$got" | python3 -c 'import json,sys; [print(json.dumps(r)) for r in json.load(sys.stdin)]') | head -20 >&2
    verdict "run #$trial (killed at $at, $at2 ms)" 1 "the result differs from the uninterrupted study"
  else verdict "run #$trial (killed at $at, $at2 ms)" 0 ""; fi
  fi

  # import: killed, then verify; the next import cleans the staging files and gives the same cohort.
  if want_op import; then
  dir=$WORK/import-$trial
  write_study "$dir"
  ( cd "$dir" && k "$dir/home" data synth datasets/oai-like.toml >/dev/null 2>&1 || true )
  at=$(cd "$dir" && kill_at_random "$import_ms" "$dir/home" data import datasets/oai-like.toml)
  v=$(k "$dir/home" verify 2>&1); vok=$?
  x=$(cd "$dir" && k "$dir/home" data import datasets/oai-like.toml 2>&1); iok=$?
  left=$(find "$dir/home/tmp" -type f | wc -l)
  a=$(KTRACK_HOME=$dir/home "$BIN" -q data ls --format csv 2>/dev/null | grep oai-like | cut -d, -f1-4 | sort)
  b=$(KTRACK_HOME=$REF/home "$BIN" -q data ls --format csv 2>/dev/null | grep oai-like | cut -d, -f1-4 | sort)
  if [ $vok != 0 ]; then verdict "import #$trial (killed at $at ms)" 1 "verify: $v"
  elif [ $iok != 0 ]; then verdict "import #$trial (killed at $at ms)" 1 "the rerun failed: $x"
  elif [ "$left" != 0 ]; then verdict "import #$trial (killed at $at ms)" 1 "$left staging files left"
  elif [ "$a" != "$b" ]; then verdict "import #$trial (killed at $at ms)" 1 "another cohort: $a vs $b"
  else verdict "import #$trial (killed at $at ms)" 0 ""; fi
  fi

  # gc: a finished study plus another home's objects (unreachable here); kill gc --apply.
  if want_op gc; then
  dir=$WORK/gc-$trial
  with_strays "$dir"
  at=$(kill_at_random "$gc_ms" "$dir/home" gc --apply --min-age 0)
  v=$(k "$dir/home" verify 2>&1); vok=$?
  x=$(k "$dir/home" gc --apply --min-age 0 2>&1); gok=$?
  v2=$(k "$dir/home" verify 2>&1); v2ok=$?
  rest=$(k "$dir/home" gc --min-age 0 --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["unreachable"]))')
  got=$(fingerprint "$dir/home")
  if [ $vok != 0 ]; then verdict "gc #$trial (killed at $at ms)" 1 "verify: $v"
  elif [ $gok != 0 ] || [ $v2ok != 0 ]; then verdict "gc #$trial (killed at $at ms)" 1 "the rerun failed: $x $v2"
  elif [ "$rest" != 0 ]; then verdict "gc #$trial (killed at $at ms)" 1 "$rest unreachable objects left"
  elif [ "$got" != "$want" ]; then verdict "gc #$trial (killed at $at ms)" 1 "the study changed"
  else verdict "gc #$trial (killed at $at ms)" 0 ""; fi
  fi

  # reindex: killed; the index in place is whole (old or new), verify passes, a rerun finishes.
  if want_op reindex; then
  dir=$WORK/reindex-$trial
  cp -a "$REF" "$dir"
  at=$(kill_at_random "$reindex_ms" "$dir/home" reindex)
  mid=$(fingerprint "$dir/home" 2>&1)
  v=$(k "$dir/home" verify 2>&1); vok=$?
  x=$(k "$dir/home" reindex 2>&1); xok=$?
  got=$(fingerprint "$dir/home")
  if [ "$mid" != "$want" ]; then verdict "reindex #$trial (killed at $at ms)" 1 "the index in place is not whole: ${mid:0:300}"
  elif [ $vok != 0 ]; then verdict "reindex #$trial (killed at $at ms)" 1 "verify: $v"
  elif [ $xok != 0 ]; then verdict "reindex #$trial (killed at $at ms)" 1 "the rerun failed: $x"
  elif [ "$got" != "$want" ]; then verdict "reindex #$trial (killed at $at ms)" 1 "the rerun changed the index"
  else verdict "reindex #$trial (killed at $at ms)" 0 ""; fi
  fi
done

echo "torture: $passed passed, $failed failed"
[ "$failed" = 0 ]

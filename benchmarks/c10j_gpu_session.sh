#!/usr/bin/env bash
# CIFAR-10 (JPEG q75 copy) on one H100 or H200 through the device tool (issue 21,
# item 5): resnet20, the CIFAR recipe (lr 0.1, no warm-up, batch 128), all 45,000
# training images (the whole train.zip less the 5,000 validation images S is
# estimated on), 5 seeds: cross-entropy (A), label smoothing, confusion and
# shuffled confusion at mass 0.3 (configs/sweep.py:cifar10_jpeg_gpu); the
# positive control and then mass 0.1 are added only where the measured
# throughput leaves at least MIN_EPOCHS epochs per model for them
# (benchmarks/c10j_gpu_plan.py). Its own experiment (c10jg_*): never mix these
# runs with the CPU sweep's.
#
# Once, HERE, in the checkout the device tool sends (the session's own, not a
# helper's worktree), after merging: bash benchmarks/c10j_gpu_session.sh prepare
#   (ml-collections wheel -> .whl/, the two zips -> .gpudata/cifar10-jpeg/, both
#   git-ignored; prints the size that travels: about 52 MB, under 64 MiB).
# Then ONE device call (the whole script ends within BUDGET_SECONDS=540 s of its
# start, inside the 600 s command limit; the machine's start is on top):
#   run(command="bash benchmarks/c10j_gpu_session.sh 2>&1",
#       carry=[".whl", ".gpudata"], timeout_s=600)
# Back in $OUT: c10j_gpu.tar.gz (summary.md/.json/.png, every run's results.json,
# config.json, wall_time.json, target.json, done.json, the worker and probe
# logs, plan.json, env.txt), and beside it session.log, summary.md, plan.json,
# env.txt. Results: add them to RESULTS.md as their own experiment.
#
# Steps, each against one deadline (BUDGET_SECONDS from the start):
#   1. wheels (only if ml_collections does not import), deterministic XLA
#      kernels (DETERMINISTIC=0 drops them), CUDA MPS when it starts and a JAX
#      check passes under it (MPS=0: never);
#   2. decode the zips once into the .npy cache (SIMSOFT_CACHE_DIR);
#   3. probe: WORKERS concurrent simsoft.main runs of the sweep's training
#      config for PROBE_SECONDS, their img/s read from the logs;
#   4. plan (benchmarks/c10j_gpu_plan.py): tier and epochs for the time left;
#   5. the sweep (python -m simsoft.sweep --workers WORKERS) under a timeout that
#      leaves SUMMARY_RESERVE s; then --summary_only from the finished runs;
#   6. pack.
# Knobs: WORKERS (8), BUDGET_SECONDS (540), MIN_EPOCHS (10), TIER / EPOCHS (force),
# SEEDS (5), CORRUPTION_EXAMPLES (0 = all 10,000), PROBE_SECONDS (100),
# SWEEP_ROOT (/tmp/c10j_gpu), PY (python3).
# MODEL overrides the model of the probe and every run (the groups' resnet20 by default).
# SMOKE=1: the CPU check (1 seed, 500 training images, 1 epoch, 200 corrupted
# images, 2 workers, a short probe, the core tier forced; MODEL=lenet unless set,
# MODEL= keeps resnet20, whose step takes minutes to compile on a small CPU), e.g.
#   SMOKE=1 OUT=/tmp/gpu_smoke PY=.venv/bin/python bash benchmarks/c10j_gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ZIPS=${ZIPS:-../shared/datasets/cifar10-jpeg}
DATA=.gpudata/cifar10-jpeg

if [ "${1:-}" = prepare ]; then
  set -e
  PY_HERE=${PY:-python3}
  version=$(sed -n 's/^ml-collections==//p' requirements.txt)
  mkdir -p .whl "$DATA"
  "$PY_HERE" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 -d .whl "ml-collections==$version"
  cp -f "$ZIPS"/train.zip "$ZIPS"/test.zip "$DATA"/
  { git check-ignore -q .whl/x && git check-ignore -q "$DATA"/train.zip; } ||
    { echo "prepare: .whl/ or .gpudata/ is not git-ignored" >&2; exit 1; }
  ls -l .whl "$DATA"
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -n 1 | cut -f1)
  carried=$(du -cb .whl "$DATA" | tail -n 1 | cut -f1)
  echo "travels: working tree $tree B + carried $carried B = $(( (tree + carried) >> 20 )) MiB (limit 64 MiB)"
  exit 0
fi

T0=$(date +%s)
SMOKE=${SMOKE:-0}
OUT=${OUT:-/tmp/c10j_gpu_out}
PY=${PY:-python3}
SWEEP_ROOT=${SWEEP_ROOT:-/tmp/c10j_gpu}
PROBE_ROOT=${PROBE_ROOT:-/tmp/c10j_gpu_probe}
SUMMARY_RESERVE=${SUMMARY_RESERVE:-45}
if [ "$SMOKE" = 1 ]; then
  BUDGET_SECONDS=${BUDGET_SECONDS:-1800} WORKERS=${WORKERS:-2} SEEDS=${SEEDS:-1}
  PROBE_SECONDS=${PROBE_SECONDS:-240} TIER=${TIER:-core} EPOCHS=${EPOCHS:-1}
  CORRUPTION_EXAMPLES=${CORRUPTION_EXAMPLES:-200} TRAIN_EXAMPLES=500 MODEL=${MODEL-lenet}
  PROBE_EXAMPLES=1920 PROBE_DISPATCH=5 PROBE_LOG_EVERY=5 PROBE_LINES=3
else
  BUDGET_SECONDS=${BUDGET_SECONDS:-540} WORKERS=${WORKERS:-8} SEEDS=${SEEDS:-5}
  PROBE_SECONDS=${PROBE_SECONDS:-100} TIER=${TIER:-} EPOCHS=${EPOCHS:-0}
  CORRUPTION_EXAMPLES=${CORRUPTION_EXAMPLES:-0} TRAIN_EXAMPLES=0 MODEL=${MODEL:-}
  PROBE_EXAMPLES=0 PROBE_DISPATCH=20 PROBE_LOG_EVERY=40 PROBE_LINES=5
fi
DEADLINE=$((T0 + BUDGET_SECONDS))
left() { echo $((DEADLINE - $(date +%s))); }
stamp() { echo "[$(($(date +%s) - T0)) s] $*"; }

mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
stamp "c10j GPU session: budget ${BUDGET_SECONDS} s, ${WORKERS} workers, ${SEEDS} seeds, smoke=$SMOKE"

# 1. Environment.
if ! "$PY" -c "import ml_collections" 2>/dev/null || [ -n "${FORCE_WHEELS:-}" ]; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/c10j_site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/c10j_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
export PYTHONUNBUFFERED=1
if [ "${DETERMINISTIC:-1}" != 0 ]; then
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_deterministic_ops=true"
fi
if [ -f "$DATA/train.zip" ]; then
  export SIMSOFT_CIFAR10_JPEG="$PWD/$DATA"
fi
export SIMSOFT_CACHE_DIR=${SIMSOFT_CACHE_DIR:-/tmp/c10j_gpu_cache}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/c10j_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
# WORKERS processes and the sweep's parent share the GPU's memory.
XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(awk -v w="$WORKERS" 'BEGIN { printf "%.3f", 0.9 / (w + 1) }')}
export XLA_PYTHON_CLIENT_MEM_FRACTION
MPS_ON=0
if [ "${MPS:-1}" != 0 ] && [ "$SMOKE" != 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/c10j_mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/c10j_mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d &&
    timeout 60 "$PY" -c "import jax.numpy as jnp; assert float(jnp.ones(8).sum()) == 8.0" >/dev/null 2>&1; then
    MPS_ON=1
  else
    echo quit | timeout 10 nvidia-cuda-mps-control >/dev/null 2>&1
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
{ nvidia-smi -L 2>&1 || true
  echo "commit $(git rev-parse HEAD 2>/dev/null) ($(git status --short 2>/dev/null | wc -l) paths differ from it)"
  "$PY" -c "import sys, jax, flax, optax, orbax.checkpoint, ml_collections, PIL; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'pillow', PIL.__version__, jax.devices())"
  echo "XLA_FLAGS=${XLA_FLAGS:-} XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION MPS=$MPS_ON"
  echo "SIMSOFT_CIFAR10_JPEG=${SIMSOFT_CIFAR10_JPEG:-(default)} workers=$WORKERS seeds=$SEEDS budget=$BUDGET_SECONDS"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 2. Decode the two zips once (the workers then read the .npy cache).
stamp "decoding the dataset"
"$PY" -c "
import time; t = time.time()
from simsoft.data import cifar10_jpeg
d = cifar10_jpeg.load()
print('decoded', {s: d.splits[s].images.shape for s in d.splits}, 'from', cifar10_jpeg.default_dir(), f'in {time.time() - t:.1f} s')
" || { stamp "the dataset did not load"; exit 1; }

# 3. Probe: WORKERS concurrent runs of the sweep's training step (each pinned to
# its share of the cores, as the sweep pins its workers).
stamp "probe: $WORKERS processes for at most $PROBE_SECONDS s"
rm -rf "$PROBE_ROOT" && mkdir -p "$PROBE_ROOT"
NCPU=$(nproc)
pids=()
for ((i = 0; i < WORKERS; i++)); do
  pin=()
  if [ "$WORKERS" -le "$NCPU" ] && command -v taskset >/dev/null; then
    pin=(taskset -c "$(seq -s, "$i" "$WORKERS" $((NCPU - 1)))")
  fi
  (echo "probe start $(date +%H:%M:%S.%N)"
    exec timeout -k 5 "$PROBE_SECONDS" "${pin[@]}" "$PY" -m simsoft.main \
      --config "configs/cifar10_jpeg.py:phases=estimate,epochs=1" \
      --config.input.steps_per_dispatch="$PROBE_DISPATCH" \
      --config.log_every_steps="$PROBE_LOG_EVERY" --config.checkpoint.every_steps=100000 \
      --config.dataset.train_examples="$PROBE_EXAMPLES" --workdir "$PROBE_ROOT/p$i" \
      ${MODEL:+"--config.model.name=$MODEL"}
  ) > "$PROBE_ROOT/probe$i.log" 2>&1 &
  pids+=($!)
done
# Stopped once every live process has logged PROBE_LINES rates (or at PROBE_SECONDS).
while :; do
  alive=0 enough=1
  for ((i = 0; i < WORKERS; i++)); do
    kill -0 "${pids[i]}" 2>/dev/null || continue
    alive=1
    [ "$(grep -c "img/s" "$PROBE_ROOT/probe$i.log")" -ge "$PROBE_LINES" ] || enough=0
  done
  [ "$alive" = 0 ] && break
  [ "$enough" = 1 ] && { kill "${pids[@]}" 2>/dev/null; break; }
  sleep 2
done
wait "${pids[@]}"
stamp "probe done"
grep -h "img/s" "$PROBE_ROOT"/probe*.log | tail -n 4

# 4. Plan.
NSEV=3 NCORR=10 TEST=10000
ex=$CORRUPTION_EXAMPLES; [ "$ex" = 0 ] && ex=$TEST
train_images=45000; [ "$TRAIN_EXAMPLES" != 0 ] && train_images=$TRAIN_EXAMPLES
"$PY" -m benchmarks.c10j_gpu_plan --probe_dir "$PROBE_ROOT" \
  --seconds $(( ($(left) - SUMMARY_RESERVE) * 9 / 10 )) --workers "$WORKERS" --seeds "$SEEDS" \
  --train_images "$train_images" --eval_images $((2 * (TEST + (NCORR * NSEV + 1) * ex))) \
  --min_epochs "${MIN_EPOCHS:-10}" --tier "$TIER" --epochs "$EPOCHS" \
  --json "$OUT/plan.json" --env "$PROBE_ROOT/plan.env" || exit 1
# shellcheck disable=SC1091
. "$PROBE_ROOT/plan.env"
args=(--config "configs/sweep.py:$GROUP" --root "$SWEEP_ROOT" --workers "$WORKERS"
  --config.seeds="($(seq -s, 0 $((SEEDS - 1))),)")
[ -n "$MASSES" ] && args+=(--config.masses="$MASSES")
for e in $EXPERIMENTS; do
  args+=(--config.experiments."$e".estimate.epochs="$EPOCHS"
    --config.experiments."$e".retrain.epochs="$EPOCHS"
    --config.experiments."$e".evaluate.evaluators.corruptions.examples="$CORRUPTION_EXAMPLES"
    --config.experiments."$e".dataset.train_examples="$TRAIN_EXAMPLES")
  [ -n "$MODEL" ] && args+=(--config.experiments."$e".model.name="$MODEL")
done

# 5. The sweep, then the summary of whatever finished.
mkdir -p "$SWEEP_ROOT"
cp "$OUT/plan.json" "$SWEEP_ROOT/plan.json"
cp "$PROBE_ROOT"/probe*.log "$SWEEP_ROOT/" 2>/dev/null
sweep_seconds=$(($(left) - SUMMARY_RESERVE))
stamp "sweep: tier $TIER, $EPOCHS epochs, group $GROUP, at most $sweep_seconds s"
start=$(date +%s)
if [ "$sweep_seconds" -gt 30 ]; then
  timeout -k 10 "$sweep_seconds" "$PY" -m simsoft.sweep "${args[@]}" > "$SWEEP_ROOT/sweep.log" 2>&1
  rc=$?
else
  rc=124
fi
stopped=""
case $rc in 124 | 137 | 143) stopped=" (stopped at the deadline: runs remain)" ;; esac
stamp "sweep rc $rc$stopped in $(($(date +%s) - start)) s; $(find "$SWEEP_ROOT" -name results.json | wc -l) runs with results"
tail -n 3 "$SWEEP_ROOT/sweep.log"
timeout -k 5 $(($(left) > 20 ? $(left) - 10 : 10)) "$PY" -m simsoft.sweep "${args[@]}" --summary_only \
  > "$SWEEP_ROOT/summary.log" 2>&1 || stamp "summary failed: $(tail -n 2 "$SWEEP_ROOT/summary.log")"
cp "$SWEEP_ROOT/summary.md" "$OUT/" 2>/dev/null && cat "$OUT/summary.md"

# 6. Pack (small files only: no checkpoints).
[ "$MPS_ON" = 1 ] && { echo quit | timeout 10 nvidia-cuda-mps-control >/dev/null 2>&1; }
stamp "packing"
cp "$OUT/env.txt" "$SWEEP_ROOT/"
# Every run's json and report.md, the logs, the summary and its figures; no
# checkpoints, no per-run figures (55 runs of them would near the 16 MiB a file).
(cd "$(dirname "$SWEEP_ROOT")" && name=$(basename "$SWEEP_ROOT") &&
  { find "$name" -path '*/checkpoints' -prune -o -type f \( -name '*.json' -o -name '*.md' -o -name '*.log' \) -print
    find "$name" -maxdepth 1 -type f \( -name '*.png' -o -name '*.txt' \) -print; } |
  tar czf "$OUT/c10j_gpu.tar.gz" -T -)
stamp "done: $(tar tzf "$OUT/c10j_gpu.tar.gz" | wc -l) files in $OUT/c10j_gpu.tar.gz ($(du -h "$OUT/c10j_gpu.tar.gz" | cut -f1))"

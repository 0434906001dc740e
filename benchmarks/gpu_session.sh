#!/usr/bin/env bash
# One device session on the GPU machine, as run through the device tool:
#   1. benchmarks/gpu.py (MFU, JAX vs PyTorch), short;
#   2. a short Fashion-MNIST pipeline run (configs/fashion_mnist.py:runlocal);
#   3. the Fashion-MNIST part of the evidence sweep (configs/sweep.py:fashion_mnist),
#      8 worker processes sharing the GPU, for at most $SWEEP_SECONDS.
# That machine has jax, flax, optax, chex, orbax and torch but no TF, TFDS or
# ml-collections: the pinned pure-Python wheels and the Fashion-MNIST IDX files
# travel in .gpudata/ (whl/, fashion-mnist/). Everything lands in $OUT.
# STEPS="bench pipeline sweep" selects parts; a rerun continues the sweep;
# SWEEP_FLAGS adds sweep flags (e.g. --config.seeds=5,6,7,8,9, or
# --config.experiments.fmnist_lenet.<field>=<value> for a run config field).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
PY=${PY:-python3}
STEPS=${STEPS:-"bench pipeline sweep"}
SWEEP_ROOT=${SWEEP_ROOT:-/tmp/sweep_fm}
mkdir -p "$OUT"
if [ -d .gpudata/whl ] && [ -z "${SKIP_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpudata/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
if [ -d .gpudata/fashion-mnist ] && [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  mkdir -p /usr/share/datasets/fashion-mnist && cp .gpudata/fashion-mnist/* /usr/share/datasets/fashion-mnist/
fi
export PYTHONUNBUFFERED=1
# Deterministic GPU kernels (launch/gpu.sh does the same); DETERMINISTIC=0 drops them.
if [ "${DETERMINISTIC:-1}" != 0 ]; then
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_deterministic_ops=true"
fi
{ nvidia-smi -L; git log -1 --format=%H 2>/dev/null || true
  "$PY" -c "import jax, flax, optax, orbax.checkpoint, ml_collections, sys; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  "$PY" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [[ " $STEPS " == *" bench "* ]]; then
  timeout "${BENCH_SECONDS:-170}" "$PY" -m benchmarks.gpu --models resnet18,wrn28_10 \
    --batch_sizes 512 --repeats 3 --max_minutes 1.5 > "$OUT/gpu_bench.jsonl" 2> "$OUT/gpu_bench.err"
  echo "bench rc $?"; tail -n 4 "$OUT/gpu_bench.jsonl"
fi
if [[ " $STEPS " == *" pipeline "* ]]; then
  start=$(date +%s)
  timeout "${PIPELINE_SECONDS:-150}" "$PY" -m simsoft.main --config configs/fashion_mnist.py:runlocal \
    --workdir /tmp/fmnist_runlocal > "$OUT/pipeline.log" 2>&1
  echo "pipeline rc $? in $(( $(date +%s) - start )) s"; grep -E "finished in|clean accuracy" "$OUT/pipeline.log"
fi
if [[ " $STEPS " == *" sweep "* ]]; then
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "${SWEEP_SECONDS:-300}" "$PY" -m simsoft.sweep --config configs/sweep.py:fashion_mnist \
    --config.experiments.fmnist_lenet.input.steps_per_dispatch=20 \
    --root "$SWEEP_ROOT" --workers "${WORKERS:-8}" ${SWEEP_FLAGS:-} > "$OUT/sweep.log" 2>&1
  echo "sweep rc $? in $(( $(date +%s) - start )) s"
  find "$SWEEP_ROOT" -name results.json | wc -l
  tar czf "$OUT/sweep_fm.tgz" --exclude=checkpoints --exclude='*.png' -C "$(dirname "$SWEEP_ROOT")" "$(basename "$SWEEP_ROOT")"
  tail -n 5 "$SWEEP_ROOT"/worker0.log
fi

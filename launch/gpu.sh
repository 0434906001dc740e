#!/usr/bin/env bash
# One machine with one or more GPUs: data parallelism over every local GPU.
#
#   bash launch/gpu.sh configs/cifar10.py:model=resnet20,similarity=confusion /tmp/simsoft/c10 \
#       --config.dataset.data_dir=$HOME/tensorflow_datasets
#
# Installs JAX with CUDA wheels into .venv (first run), then runs the pipeline.
# TensorFlow stays on the CPU (simsoft.data hides the GPUs from it).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:?usage: launch/gpu.sh CONFIG WORKDIR [flags...]}"
WORKDIR="${2:?usage: launch/gpu.sh CONFIG WORKDIR [flags...]}"
shift 2
bash launch/setup.sh
JAX_VERSION="$(.venv/bin/python -c 'import jax; print(jax.__version__)')"
.venv/bin/python -m pip install -q "jax[cuda12]==${JAX_VERSION}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
exec .venv/bin/python -m simsoft.main --config "$CONFIG" --workdir "$WORKDIR" "$@"

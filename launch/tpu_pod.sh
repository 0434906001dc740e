#!/usr/bin/env bash
# A Cloud TPU VM pod slice: create it, copy the code, install, run the same
# command on every worker, then delete the slice.
#
#   TPU_NAME=simsoft-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#   BUCKET=gs://my-bucket bash launch/tpu_pod.sh configs/cifar10.py:model=wrn c10_wrn_seed0
#
# Every worker reads TFDS from $BUCKET/tensorflow_datasets (prepare it once with
# `tfds build cifar10 --data_dir=$BUCKET/tensorflow_datasets` on a machine with
# network) and writes checkpoints, S and results to $BUCKET/simsoft/<run name>.
# jax.distributed.initialize() finds the other workers by itself on Cloud TPU
# (--distributed); each worker reads its own shard of every batch.
# Set KEEP_TPU=1 to keep the slice after the run (e.g. to resume later: rerunning
# the same command with the same run name resumes from the last checkpoint).
set -euo pipefail
CONFIG="${1:?usage: launch/tpu_pod.sh CONFIG RUN_NAME [flags...]}"
RUN_NAME="${2:?usage: launch/tpu_pod.sh CONFIG RUN_NAME [flags...]}"
shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE}" "${BUCKET:?set BUCKET (gs://...)}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
      --accelerator-type "$ACCELERATOR_TYPE" --version "$RUNTIME_VERSION"
fi

tar -C "$HERE" --exclude=.venv --exclude=.git -czf /tmp/simsoft.tgz .
gcloud compute tpus tpu-vm scp /tmp/simsoft.tgz "$TPU_NAME":~/simsoft.tgz --zone "$ZONE" --worker=all

EXTRA_FLAGS="$(printf '%q ' "$@")"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  mkdir -p ~/simsoft && tar -C ~/simsoft -xzf ~/simsoft.tgz && cd ~/simsoft
  bash launch/setup.sh
  JAX_VERSION=\$(.venv/bin/python -c 'import jax; print(jax.__version__)')
  .venv/bin/python -m pip install -q \"jax[tpu]==\$JAX_VERSION\"
  .venv/bin/python -m simsoft.main --distributed --config '$CONFIG' \
      --workdir '$BUCKET/simsoft/$RUN_NAME' \
      --config.dataset.data_dir='$BUCKET/tensorflow_datasets' $EXTRA_FLAGS
"

if [ "${KEEP_TPU:-0}" != 1 ]; then
  gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE" --quiet
fi

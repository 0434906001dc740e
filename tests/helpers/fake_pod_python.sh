#!/usr/bin/env bash
# The venv python of a fake pod worker (tests/helpers/fake_gcloud.py): plays
# `python -m simsoft.main --workdir gs://...` as a job of FAKE_JOB_STEPS steps
# of FAKE_STEP_SECONDS, checkpointing after each step into the bucket and
# resuming from there; worker FAKE_FAIL_WORKER fails at once; on worker
# FAKE_SLOW_STOP_WORKER a SIGTERM takes a minute to "save" before exit 75.
set -euo pipefail
if [ "${FAKE_SLOW_STOP_WORKER:-}" = "$SIMSOFT_WORKER_ID" ]; then trap 'sleep 60; exit 75' TERM; fi
if [ "${1:-}" = -c ]; then echo "worker $SIMSOFT_WORKER_ID ready: fake simsoft"; exit 0; fi
echo "fake simsoft.main $*"
workdir="" config=""
prev=""
for arg in "$@"; do
  case "$prev" in --workdir) workdir="$arg" ;; --config) config="$arg" ;; esac
  case "$arg" in
    --config.*=inputs/*)  # a file the run names: its copy must be here
      [ -r "${arg#*=}" ] || { echo "missing input ${arg#*=}"; exit 2; } ;;
  esac
  prev="$arg"
done
case "$config" in inputs/*) [ -r "${config%%:*}" ] || { echo "missing config $config"; exit 2; } ;; esac
dir="$FAKE_GCLOUD_STATE/gcs/${workdir#gs://}"
mkdir -p "$dir"
step=0
if [ -f "$dir/checkpoint" ]; then
  step="$(cat "$dir/checkpoint")"
  echo "resuming from checkpoint step $step"
fi
if [ "${FAKE_FAIL_WORKER:-}" = "$SIMSOFT_WORKER_ID" ]; then
  echo "Traceback (most recent call last): worker $SIMSOFT_WORKER_ID failed"
  exit 1
fi
while [ "$step" -lt "${FAKE_JOB_STEPS:-3}" ]; do
  sleep "${FAKE_STEP_SECONDS:-1}"
  step=$((step + 1))
  echo "step $step"
  if [ "$SIMSOFT_WORKER_ID" = 0 ]; then echo "$step" >"$dir/checkpoint"; fi
done
echo "done at step $step"

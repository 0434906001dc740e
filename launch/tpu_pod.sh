#!/usr/bin/env bash
# Cloud TPU VM pod slices: create, set up, run detached on every worker, watch, delete.
#
#   export TPU_NAME=simsoft-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 BUCKET=gs://my-bucket
#   bash launch/tpu_pod.sh up configs/cifar10.py:model=wrn c10_wrn_seed0
#
# Subcommands (TPU_NAME and ZONE always; ACCELERATOR_TYPE for create, BUCKET for
# prepare and start):
#   up CONFIG RUN_NAME [flags]  create + setup (+ prepare $PREPARE) + start + wait,
#                               then delete the slice (KEEP_TPU=1 keeps it)
#   create                      the slice (QUEUED=1: a queued resource; SPOT=1: spot)
#   setup                       copy the wheel, install uv, Python 3.11 and simsoft[all]
#                               + jax[tpu] into ~/simsoft/.venv on every worker
#   prepare DATASET...          `tfds build` into $BUCKET/tensorflow_datasets, on worker 0
#                               only (once per bucket; workers never download)
#   start CONFIG RUN_NAME [flags]  clear stale TPU processes, start the job detached
#                               (nohup) on every worker; per-worker logs
#   wait                        poll until the job ends on every worker; fail if any failed
#   logs [WORKER [LINES]]       the last lines of each worker's log (or one worker's)
#   status                      slice state and, per worker, running / exit code
#   stop                        stop the job on every worker
#   delete                      delete the slice (and its queued resource)
# `tpu_pod.sh CONFIG RUN_NAME` (no subcommand) means `up`.
#
# Accelerators and runtimes (RUNTIME_VERSION overrides): v2/v3/v4-N
# tpu-ubuntu2204-base; v5litepod-N (or v5e-N) v2-alpha-tpuv5-lite; v5p-N
# v2-alpha-tpuv5; v6e-N v2-alpha-tpuv6e. The images' own Python is 3.10, so
# setup installs Python 3.11 with uv. Workers write the run to
# $BUCKET/simsoft/RUN_NAME, their logs also to $BUCKET/simsoft/RUN_NAME/logs.
# Other settings: PROJECT, QUEUED_ID (default $TPU_NAME-qr), WHEEL (a built
# simsoft wheel; default: built from this checkout; set it when running the
# copy installed in simsoft/launch), PYTHON_VERSION (3.11),
# POLL_SECONDS (60). DRY_RUN=1 prints every gcloud command instead of running it.
# A failure (of any step, or of the job) deletes the slice unless KEEP_TPU=1;
# Ctrl-C while waiting leaves the job running (`wait` resumes, `delete` ends it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DRY_RUN="${DRY_RUN:-0}"
KEEP_TPU="${KEEP_TPU:-0}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
POLL_SECONDS="${POLL_SECONDS:-60}"
WATCHING=0

die() { echo "tpu_pod.sh: $*" >&2; exit 1; }

# Runs a command, or in a dry run prints it (shell-quoted, after '+ ').
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

gc() {
  local project=()
  if [ -n "${PROJECT:-}" ]; then project=(--project "$PROJECT"); fi
  run gcloud "$@" ${project[@]+"${project[@]}"}
}

# A read-only gcloud query: printed in a dry run, where it reports nothing.
query() {
  if [ "$DRY_RUN" = 1 ]; then gc "$@"; return 1; fi
  gc "$@"
}

on_workers() {  # WORKER COMMAND
  gc compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker="$1" --command "$2"
}

worker_cmd() {  # ARGS... -> the shell-quoted command line of ~/simsoft/tpu_worker.sh ARGS
  printf 'bash ~/simsoft/tpu_worker.sh'
  printf ' %q' "$@"
}

need() { for v in "$@"; do [ -n "${!v:-}" ] || die "set $v"; done; }

accelerator() {
  case "$ACCELERATOR_TYPE" in
    v5e-*) echo "v5litepod-${ACCELERATOR_TYPE#v5e-}" ;;
    *) echo "$ACCELERATOR_TYPE" ;;
  esac
}

runtime_version() {
  if [ -n "${RUNTIME_VERSION:-}" ]; then echo "$RUNTIME_VERSION"; return; fi
  case "$(accelerator)" in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "unknown ACCELERATOR_TYPE '$ACCELERATOR_TYPE' (v4-32, v5litepod-16, v5p-8, v6e-8, ...); or set RUNTIME_VERSION" ;;
  esac
}

slice_exists() {
  if [ "$DRY_RUN" = 1 ]; then
    query compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format='value(state)' || return 1
  fi
  gc compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format='value(state)' >/dev/null 2>&1
}

queued_id() { echo "${QUEUED_ID:-$TPU_NAME-qr}"; }

create() {
  need TPU_NAME ZONE ACCELERATOR_TYPE
  local acc version spot=()
  acc="$(accelerator)"
  version="$(runtime_version)"
  if [ "${SPOT:-0}" = 1 ]; then spot=(--spot); fi
  if slice_exists; then
    echo "slice $TPU_NAME exists; using it"
    return
  fi
  if [ "${QUEUED:-0}" = 1 ]; then
    gc compute tpus queued-resources create "$(queued_id)" --node-id "$TPU_NAME" --zone "$ZONE" \
      --accelerator-type "$acc" --runtime-version "$version" ${spot[@]+"${spot[@]}"}
    local state=""
    while [ "$DRY_RUN" != 1 ] && [ "$state" != ACTIVE ]; do
      state="$(gc compute tpus queued-resources describe "$(queued_id)" --zone "$ZONE" --format='value(state.state)')"
      case "$state" in FAILED | SUSPENDED) die "queued resource $(queued_id) is $state" ;; esac
      [ "$state" = ACTIVE ] || { echo "queued resource $(queued_id): ${state:-?}; waiting"; sleep "$POLL_SECONDS"; }
    done
    if [ "$DRY_RUN" = 1 ]; then
      query compute tpus queued-resources describe "$(queued_id)" --zone "$ZONE" --format='value(state.state)' || true
    fi
  else
    gc compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" --accelerator-type "$acc" \
      --version "$version" ${spot[@]+"${spot[@]}"}
  fi
}

wheel() {
  if [ -n "${WHEEL:-}" ]; then echo "$WHEEL"; return; fi
  local version
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")"
  echo "$ROOT/dist/simsoft-$version-py3-none-any.whl"
}

setup() {
  need TPU_NAME ZONE
  local whl jax_version
  whl="$(wheel)"
  if [ -z "${WHEEL:-}" ]; then
    run python3 -m pip wheel -q --no-deps -w "$ROOT/dist" "$ROOT"
  fi
  jax_version="$(sed -n 's/^jax==//p' "$ROOT/requirements.txt")"
  gc compute tpus tpu-vm scp "$whl" "$ROOT/requirements.txt" "$ROOT/launch/tpu_worker.sh" \
    "$TPU_NAME:" --zone "$ZONE" --worker=all
  on_workers all "mkdir -p ~/simsoft && mv -f ~/$(basename "$whl") ~/requirements.txt ~/tpu_worker.sh ~/simsoft/ && $(worker_cmd setup "$(basename "$whl")" "$jax_version" "$PYTHON_VERSION")"
}

prepare() {
  need TPU_NAME ZONE BUCKET
  [ $# -gt 0 ] || die "usage: tpu_pod.sh prepare DATASET... (e.g. cifar10 cifar10_corrupted)"
  on_workers 0 "$(worker_cmd prepare "$BUCKET/tensorflow_datasets" "$@")"
}

start() {
  need TPU_NAME ZONE BUCKET
  [ $# -ge 2 ] || die "usage: tpu_pod.sh start CONFIG RUN_NAME [flags...]"
  local config="$1" run_name="$2"
  shift 2
  on_workers all "$(worker_cmd start "$BUCKET/simsoft/$run_name" "$BUCKET/tensorflow_datasets" "$config" "$@")"
}

status() {
  need TPU_NAME ZONE
  query compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format='value(state,acceleratorType,runtimeVersion)' || true
  on_workers all "$(worker_cmd status)"
}

wait_job() {
  need TPU_NAME ZONE
  WATCHING=1
  local out
  while true; do
    out="$(on_workers all "$(worker_cmd status)")"
    [ -z "$out" ] || echo "$out"
    if ! grep -q ': running' <<<"$out"; then break; fi
    sleep "$POLL_SECONDS"
  done
  WATCHING=0
  if grep -Eq ': (exited [1-9]|no job)' <<<"$out"; then die "the job failed on a worker (see: tpu_pod.sh logs)"; fi
  echo "the job finished on every worker"
}

logs() {
  need TPU_NAME ZONE
  on_workers "${1:-all}" "$(worker_cmd logs "${2:-20}")"
}

stop() {
  need TPU_NAME ZONE
  on_workers all "$(worker_cmd stop)"
}

delete() {
  need TPU_NAME ZONE
  if [ "${QUEUED:-0}" = 1 ]; then
    gc compute tpus queued-resources delete "$(queued_id)" --zone "$ZONE" --force --quiet
  else
    gc compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE" --quiet
  fi
}

on_exit() {
  local rc=$?
  if [ "$rc" = 0 ]; then return; fi
  if [ "$WATCHING" = 1 ] && [ "$rc" = 130 ]; then
    echo "stopped watching; the job keeps running (tpu_pod.sh wait | logs | stop | delete)" >&2
  elif [ "$KEEP_TPU" = 1 ]; then
    echo "failed (exit $rc); KEEP_TPU=1 keeps slice $TPU_NAME" >&2
  else
    echo "failed (exit $rc): deleting slice $TPU_NAME (KEEP_TPU=1 keeps it)" >&2
    delete || echo "could not delete $TPU_NAME: delete it by hand, it bills" >&2
  fi
}

up() {
  [ $# -ge 2 ] || die "usage: tpu_pod.sh up CONFIG RUN_NAME [flags...]"
  need TPU_NAME ZONE ACCELERATOR_TYPE BUCKET
  trap on_exit EXIT
  trap 'exit 130' INT
  create
  setup
  if [ -n "${PREPARE:-}" ]; then
    # shellcheck disable=SC2086  # a list of dataset names
    prepare $PREPARE
  fi
  start "$@"
  wait_job
  if [ "$KEEP_TPU" != 1 ]; then delete; fi
}

command="${1:-}"
case "$command" in
  up | create | setup | prepare | start | status | logs | stop | delete)
    shift
    "$command" "$@"
    ;;
  wait) shift; wait_job ;;
  "" | -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) up "$@" ;;
esac

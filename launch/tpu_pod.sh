#!/usr/bin/env bash
# Cloud TPU VM pod slices: create, set up, run detached on every worker, watch, delete.
#
#   export TPU_NAME=simsoft-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 BUCKET=gs://my-bucket
#   bash launch/tpu_pod.sh up configs/cifar10.py:model=wrn c10_wrn_seed0
#
# Subcommands (TPU_NAME and ZONE always; ACCELERATOR_TYPE for create, BUCKET for
# prepare, start, wait, status and logs):
#   up CONFIG RUN_NAME [flags]  create + setup (+ prepare $PREPARE) + start + wait,
#                               re-queue and resume after a spot preemption (SPOT=1),
#                               then delete the slice it created (KEEP_TPU=1 keeps it)
#   create                      a queued resource (the default; QUEUED=0: the Create
#                               Node API), spot capacity with SPOT=1
#   setup                       build the wheel with the project's .venv, copy it, install
#                               uv, Python 3.11, the runtime requirements, simsoft[all]
#                               and jax[tpu] into ~/simsoft/.venv on every worker
#   prepare DATASET...          `tfds build` on worker 0's disk, then copied to
#                               $BUCKET/tensorflow_datasets (once per bucket)
#   start CONFIG RUN_NAME [flags]  copy the config and the files it names to
#                               $BUCKET/simsoft/RUN_NAME/inputs, start the job detached
#                               (nohup) on every worker
#   wait                        watch the job through the bucket until it ends
#   logs [WORKER [LINES]]       the last lines of each worker's log (or one worker's), from the bucket
#   status                      slice state and, per worker, the job's state, from the bucket
#   stop                        stop the job on every worker (ssh): SIGTERM (simsoft
#                               saves a checkpoint and exits 75), SIGKILL after
#                               STOP_SECONDS (60); the final state reaches the bucket
#   delete                      delete the slice (and its queued resource)
#   wheel                       build the wheel setup copies (unless WHEEL is set); print its path
# `tpu_pod.sh CONFIG RUN_NAME` (a .py config first, no subcommand) means `up`.
#
# Accelerators (checked before any gcloud call) and runtimes (RUNTIME_VERSION
# overrides): v2-8..512, v3-8..2048, v4-8..4096 tpu-ubuntu2204-base;
# v5litepod-1..256 (or v5e-N) v2-alpha-tpuv5-lite; v5p-8..12288 v2-alpha-tpuv5;
# v6e-1..256 v2-alpha-tpuv6e. The images' own Python is 3.10, so setup
# installs Python 3.11 with uv.
#
# The run lives in $BUCKET/simsoft/RUN_NAME: checkpoints, results, inputs/ (the
# config and the files it names, copied by start), logs/worker-N.log and
# status/worker-N, which the workers refresh every SYNC_SECONDS (60) while the
# job runs. wait reads those; it asks a worker over ssh only when its state is
# older than STALE_SECONDS (600), and retries a failed gcloud call or ssh with
# backoff (POLL_SECONDS, 60, doubling up to MAX_POLL_SECONDS, 600). Only a job
# known to have failed (an exit code other than 0 on some worker) or a slice
# gone (preempted, deleted) ends the watch.
# Preemption: with SPOT=1, `up` deletes the suspended queued resource it
# created, queues a new one, sets it up and starts the same run, which resumes
# from its last checkpoint in the bucket; at most MAX_REQUEUES (3) times.
# Deletion: `up` deletes only a slice it created, after the job ended (finished,
# failed, or the slice preempted), or when a step before start failed; never
# while the job may still run (Ctrl-C while waiting leaves it running: `wait`
# resumes, `delete` ends it); KEEP_TPU=1 never deletes.
# Other settings: PROJECT, QUEUED_ID (default $TPU_NAME-qr), RUN_NAME (for
# wait/status/logs; default the last run started on the slice), WHEEL (a built
# simsoft wheel), PYTHON (the project's python: .venv/bin/python),
# PYTHON_VERSION (3.11). DRY_RUN=1 prints each command it would run
# ("would run: ...") and runs none.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DRY_RUN="${DRY_RUN:-0}"
KEEP_TPU="${KEEP_TPU:-0}"
QUEUED="${QUEUED:-1}"
SPOT="${SPOT:-0}"
MAX_REQUEUES="${MAX_REQUEUES:-3}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
POLL_SECONDS="${POLL_SECONDS:-60}"
MAX_POLL_SECONDS="${MAX_POLL_SECONDS:-600}"
SYNC_SECONDS="${SYNC_SECONDS:-60}"
STALE_SECONDS="${STALE_SECONDS:-600}"
STOP_SECONDS="${STOP_SECONDS:-60}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
CREATED=0    # 1 once this invocation created the slice (only then may it delete it)
TPU_CREATE_TRIED=0  # 1 once create ran (found the slice or made it)
JOB=none     # none | started (may be running) | ended
STAGED=0
COPIES=()    # LOCAL<TAB>inputs/... pairs from simsoft.staging
WORKER_ARGS=()

die() { echo "tpu_pod.sh: $*" >&2; exit 1; }
say() { echo "tpu_pod.sh: $*"; }

# Runs a command, or in a dry run prints it (shell-quoted, after 'would run: ').
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would run:'
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

# Hosts (workers) of a known accelerator type; fails for an unknown one.
hosts() {  # ACCELERATOR
  local generation="${1%-*}" size="${1##*-}"
  [[ "$size" =~ ^[1-9][0-9]*$ ]] || return 1
  case "$generation" in
    v2) [[ " 8 32 128 256 512 " == *" $size "* ]] || return 1; echo $((size / 8)) ;;
    v3) [[ " 8 32 64 128 256 512 1024 2048 " == *" $size "* ]] || return 1; echo $((size / 8)) ;;
    v4) [[ " 8 16 32 64 128 256 512 1024 2048 4096 " == *" $size "* ]] || return 1; echo $((size / 8)) ;;
    v5p) [ $((size % 8)) = 0 ] && [ "$size" -le 12288 ] || return 1; echo $((size / 8)) ;;
    v5litepod | v6e)
      [[ " 1 4 8 16 32 64 128 256 " == *" $size "* ]] || return 1
      if [ "$size" -le 8 ]; then echo 1; else echo $((size / 4)); fi ;;
    *) return 1 ;;
  esac
}

check_accelerator() {
  hosts "$(accelerator)" >/dev/null \
    || die "unknown ACCELERATOR_TYPE '$ACCELERATOR_TYPE' (known: v2-8..512, v3-8..2048, v4-8..4096, v5litepod-1..256 or v5e-N, v5p-8..12288, v6e-1..256)"
}

runtime_version() {
  if [ -n "${RUNTIME_VERSION:-}" ]; then echo "$RUNTIME_VERSION"; return; fi
  case "$(accelerator)" in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
  esac
}

queued_id() { echo "${QUEUED_ID:-$TPU_NAME-qr}"; }

# The slice's state: READY, ..., PREEMPTED; GONE when it does not exist; exit 1
# when gcloud could not tell (a transient failure).
slice_state() {
  local out err
  err="$(mktemp)"
  if out="$(gc compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format='value(state)' 2>"$err")"; then
    rm -f "$err"
    echo "${out:-UNKNOWN}"
    return 0
  fi
  if grep -q 'NOT_FOUND\|not found' "$err"; then rm -f "$err"; echo GONE; return 0; fi
  cat "$err" >&2
  rm -f "$err"
  return 1
}

create() {
  need TPU_NAME ZONE ACCELERATOR_TYPE
  check_accelerator
  local acc version spot=() state
  acc="$(accelerator)"
  version="$(runtime_version)"
  if [ "$SPOT" = 1 ]; then spot=(--spot); fi
  TPU_CREATE_TRIED=1
  if [ "$DRY_RUN" = 1 ]; then
    query compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format='value(state)' || true
  else
    state="$(slice_state)" || die "could not describe slice $TPU_NAME"
    if [ "$state" != GONE ]; then
      say "slice $TPU_NAME exists ($state); using it (this script will not delete it)"
      return
    fi
  fi
  if [ "$QUEUED" = 1 ]; then
    gc compute tpus queued-resources create "$(queued_id)" --node-id "$TPU_NAME" --zone "$ZONE" \
      --accelerator-type "$acc" --runtime-version "$version" ${spot[@]+"${spot[@]}"}
    CREATED=1
    if [ "$DRY_RUN" = 1 ]; then
      query compute tpus queued-resources describe "$(queued_id)" --zone "$ZONE" --format='value(state.state)' || true
      say "would wait until queued resource $(queued_id) is ACTIVE"
      return
    fi
    state=""
    while [ "$state" != ACTIVE ]; do
      state="$(gc compute tpus queued-resources describe "$(queued_id)" --zone "$ZONE" --format='value(state.state)')" \
        || { say "could not describe $(queued_id); retrying"; state=""; }
      case "$state" in FAILED | SUSPENDED) die "queued resource $(queued_id) is $state" ;; esac
      [ "$state" = ACTIVE ] || { say "queued resource $(queued_id): ${state:-?}; waiting"; sleep "$POLL_SECONDS"; }
    done
  else
    gc compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" --accelerator-type "$acc" \
      --version "$version" ${spot[@]+"${spot[@]}"}
    CREATED=1
  fi
}

wheel() {
  if [ -n "${WHEEL:-}" ]; then echo "$WHEEL"; return; fi
  local version
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")"
  echo "$ROOT/dist/simsoft-$version-py3-none-any.whl"
}

# Builds the wheel (unless WHEEL names one) with the project's environment, as
# the tests build it; `tpu_pod.sh wheel` prints its path (simsoft.pod_sweep
# builds it once for all the runs of a sweep).
build_wheel() {
  if [ -z "${WHEEL:-}" ]; then
    run "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$ROOT/dist" "$ROOT"
  fi
}

setup() {
  need TPU_NAME ZONE
  local whl jax_version
  whl="$(wheel)"
  build_wheel
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

# What the run names (simsoft.staging): the files to copy, the workers' arguments.
# Reads only local files; refuses (one line) what cannot travel.
stage() {  # CONFIG [flags]
  local out kind a b
  out="$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m simsoft.staging "$@")" || exit 1
  COPIES=()
  WORKER_ARGS=()
  while IFS=$'\t' read -r kind a b; do
    case "$kind" in
      copy) COPIES+=("$a"$'\t'"$b") ;;
      arg) WORKER_ARGS+=("$a") ;;
    esac
  done <<<"$out"
  STAGED=1
}

run_dir() { echo "$BUCKET/simsoft/$1"; }

start() {
  need TPU_NAME ZONE BUCKET
  [ $# -ge 2 ] || die "usage: tpu_pod.sh start CONFIG RUN_NAME [flags...]"
  local config="$1" run_name="$2" acc workers dir attempt manifest pair
  shift 2
  if [ "$STAGED" != 1 ]; then stage "$config" "$@"; fi
  if [ -n "${ACCELERATOR_TYPE:-}" ]; then
    acc="$(accelerator)"
  elif [ "$DRY_RUN" = 1 ]; then
    die "set ACCELERATOR_TYPE for a dry run of start"
  else
    acc="$(gc compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format='value(acceleratorType)')"
    acc="${acc##*/}"
  fi
  workers="$(hosts "$acc")" || die "unknown accelerator type '$acc'"
  dir="$(run_dir "$run_name")"
  attempt="$(date +%s)"
  # Everything the run names, copied before the job starts.
  for pair in ${COPIES[@]+"${COPIES[@]}"}; do
    gc storage cp "${pair%%$'\t'*}" "$dir/${pair#*$'\t'}"
  done
  manifest="$(mktemp)"
  printf 'workers=%s\naccelerator=%s\nattempt=%s\nslice=%s\n' "$workers" "$acc" "$attempt" "$TPU_NAME" >"$manifest"
  gc storage cp "$manifest" "$dir/inputs/launch.env"
  echo "$run_name" >"$manifest"
  gc storage cp "$manifest" "$BUCKET/simsoft/.slices/$TPU_NAME"
  rm -f "$manifest"
  JOB=started
  on_workers all "SIMSOFT_SYNC_SECONDS=$SYNC_SECONDS $(worker_cmd start "$dir" "$BUCKET/tensorflow_datasets" "$attempt" "${WORKER_ARGS[@]}")"
  if [ "$DRY_RUN" = 1 ]; then
    say "would start run $run_name on $workers worker(s): $dir"
  else
    say "started run $run_name on $workers worker(s): $dir"
  fi
}

# The run wait/status/logs look at: RUN_NAME, else the last one started on the slice.
current_run() {
  if [ -n "${RUN_NAME:-}" ]; then echo "$RUN_NAME"; return; fi
  if [ "$DRY_RUN" = 1 ]; then echo RUN_NAME; return; fi
  gc storage cat "$BUCKET/simsoft/.slices/$TPU_NAME" 2>/dev/null \
    || die "no run recorded for slice $TPU_NAME in $BUCKET/simsoft/.slices; set RUN_NAME"
}

# KEY from the run's launch.env.
manifest_value() {  # RUN_DIR KEY
  gc storage cat "$1/inputs/launch.env" | sed -n "s/^$2=//p"
}

# One line per worker: 'N STATE [RC]' (STATE: running, exited, terminated, stale,
# none) from the bucket; exit 1 if the bucket could not be read.
bucket_states() {  # RUN_DIR WORKERS ATTEMPT
  local i line now err a state rest
  now="$(date +%s)"
  err="$(mktemp)"
  for ((i = 0; i < $2; i++)); do
    if ! line="$(gc storage cat "$1/status/worker-$i" 2>"$err")"; then
      if grep -qi 'matched no objects\|not found\|No URLs matched' "$err"; then line=""; else
        cat "$err" >&2; rm -f "$err"; return 1
      fi
    fi
    read -r a state rest <<<"$line"
    if [ "${a:-}" != "$3" ]; then echo "$i none"; continue; fi
    case "$state" in
      running)
        if [ $((now - rest)) -gt "$STALE_SECONDS" ]; then echo "$i stale"; else echo "$i running"; fi ;;
      exited | terminated) echo "$i $state ${rest%% *}" ;;
      *) echo "$i none" ;;
    esac
  done
  rm -f "$err"
}

# Watches the run until it ends: 0 finished on every worker, 1 failed (the job
# is known to have ended badly), 3 the slice is gone (preempted or deleted).
wait_job() {
  need TPU_NAME ZONE BUCKET
  local run_name dir workers attempt delay failures=0 states state line i s rc ok reason
  run_name="${1:-$(current_run)}"
  dir="$(run_dir "$run_name")"
  if [ "$DRY_RUN" = 1 ]; then
    query compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format='value(state)' || true
    query storage cat "$dir/status/worker-0" || true
    say "would poll $dir/status/ every $POLL_SECONDS s until the job ends on every worker"
    return 0
  fi
  until workers="$(manifest_value "$dir" workers)" && attempt="$(manifest_value "$dir" attempt)" \
    && [ -n "$workers" ]; do
    failures=$((failures + 1))
    delay=$((POLL_SECONDS * (1 << (failures < 4 ? failures : 4))))
    say "could not read $dir/inputs/launch.env; retrying in ${delay}s"
    sleep "$delay"
  done
  failures=0
  say "watching run $run_name ($workers worker(s)) through $dir"
  while true; do
    ok=1
    reason=""
    if state="$(slice_state)"; then
      case "$state" in
        GONE | PREEMPTED | TERMINATED | DELETING)
          say "slice $TPU_NAME is ${state/GONE/gone}"
          return 3 ;;
      esac
    else
      ok=0
      reason="could not describe the slice"
    fi
    if [ "$ok" = 1 ]; then
      if states="$(bucket_states "$dir" "$workers" "$attempt")"; then
        # Workers whose state is missing or old: ask them over ssh.
        local asked=""
        while read -r i s rc; do
          case "$s" in
            stale | none)
              if line="$(on_workers "$i" "$(worker_cmd status)" 2>&1 </dev/null)"; then
                case "$line" in
                  *": running"*) asked+="$i running"$'\n' ;;
                  *": exited "*) asked+="$i exited $(sed -n 's/.*: exited \([0-9]*\).*/\1/p' <<<"$line" | tail -n 1)"$'\n' ;;
                  *": no job"*) asked+="$i vanished"$'\n' ;;
                  *) asked+="$i $s"$'\n' ;;
                esac
              else
                ok=0
                reason="worker $i unreachable over ssh"
                asked+="$i $s"$'\n'
              fi ;;
            *) asked+="$i $s${rc:+ $rc}"$'\n' ;;
          esac
        done <<<"$states"
        states="$asked"
      else
        ok=0
        reason="could not read the bucket"
      fi
    fi
    if [ "$ok" = 1 ] || [ -n "${states:-}" ]; then
      # Exit 75: simsoft saved a checkpoint on a preemption notice (SIGTERM on
      # any host stops every host at the same step): as a signal, not a failure.
      states="$(sed -E 's/^([0-9]+) exited 75$/\1 terminated 75/' <<<"${states:-}")"
      if grep -Eq '^[0-9]+ (exited [1-9]|vanished)' <<<"${states:-}"; then
        echo "$states" | sed '/^$/d; s/^/  worker /'
        JOB=ended
        say "the job failed on worker(s) $(grep -E '^[0-9]+ (exited [1-9]|vanished)' <<<"$states" | cut -d' ' -f1 | tr '\n' ' ')(tpu_pod.sh logs)"
        return 1
      fi
      if [ "$(grep -c '^[0-9]* exited 0' <<<"${states:-}")" = "$workers" ]; then
        JOB=ended
        say "the job finished on all $workers worker(s); logs in $dir/logs"
        return 0
      fi
      if grep -Eq '^[0-9]+ terminated' <<<"${states:-}" && [ "$ok" = 1 ]; then
        # Stopped by a signal while the slice is up: a stop, or a shutdown in
        # progress; the slice state decides on the next poll.
        reason="the job was terminated on a worker; checking the slice again"
      fi
    fi
    if [ "$ok" = 1 ] && [ -z "$reason" ]; then
      failures=0
      delay="$POLL_SECONDS"
      say "running: $(tr '\n' ' ' <<<"${states:-}" | sed 's/ *$//')"
    else
      failures=$((failures + 1))
      delay=$((POLL_SECONDS * (1 << (failures < 10 ? failures : 10))))
      [ "$delay" -le "$MAX_POLL_SECONDS" ] || delay="$MAX_POLL_SECONDS"
      say "$reason; the job may still be running; retrying in ${delay}s"
    fi
    sleep "$delay"
  done
}

status() {
  need TPU_NAME ZONE BUCKET
  local run_name dir workers attempt
  query compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format='value(state,acceleratorType,runtimeVersion)' || true
  run_name="$(current_run)"
  dir="$(run_dir "$run_name")"
  if [ "$DRY_RUN" = 1 ]; then query storage cat "$dir/status/worker-0" || true; return 0; fi
  workers="$(manifest_value "$dir" workers)"
  attempt="$(manifest_value "$dir" attempt)"
  echo "run $run_name ($dir):"
  bucket_states "$dir" "$workers" "$attempt" | sed 's/^/  worker /'
}

logs() {
  need TPU_NAME ZONE BUCKET
  local run_name dir workers i lines="${2:-20}"
  run_name="$(current_run)"
  dir="$(run_dir "$run_name")"
  if [ -n "${1:-}" ] && [ "$1" != all ]; then
    if [ "$DRY_RUN" = 1 ]; then query storage cat "$dir/logs/worker-$1.log" || true; return 0; fi
    gc storage cat "$dir/logs/worker-$1.log" | tail -n "$lines" | sed "s/^/[worker $1] /"
    return 0
  fi
  if [ "$DRY_RUN" = 1 ]; then query storage cat "$dir/logs/worker-0.log" || true; return 0; fi
  workers="$(manifest_value "$dir" workers)"
  for ((i = 0; i < workers; i++)); do
    gc storage cat "$dir/logs/worker-$i.log" 2>/dev/null | tail -n "$lines" | sed "s/^/[worker $i] /" || true
  done
}

stop() {
  need TPU_NAME ZONE
  on_workers all "SIMSOFT_STOP_SECONDS=$STOP_SECONDS $(worker_cmd stop)"
}

delete() {
  need TPU_NAME ZONE
  if [ "$QUEUED" = 1 ]; then
    gc compute tpus queued-resources delete "$(queued_id)" --zone "$ZONE" --force --quiet
  else
    gc compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE" --quiet
  fi
}

# Deletes the slice if this invocation created it (and KEEP_TPU is not 1).
delete_created() {
  if [ "$CREATED" != 1 ]; then
    [ "$DRY_RUN" = 1 ] || say "slice $TPU_NAME was there before; left as it is (tpu_pod.sh delete)"
    return 0
  fi
  if [ "$KEEP_TPU" = 1 ]; then
    say "KEEP_TPU=1 keeps slice $TPU_NAME (tpu_pod.sh delete)"
    return 0
  fi
  delete
  CREATED=0
  # A queued resource's deletion finishes in the background: wait until it is gone.
  if [ "$QUEUED" = 1 ] && [ "$DRY_RUN" != 1 ]; then
    local tries=0
    while gc compute tpus queued-resources describe "$(queued_id)" --zone "$ZONE" --format='value(state.state)' >/dev/null 2>&1; do
      tries=$((tries + 1))
      [ "$tries" -le 60 ] || { say "queued resource $(queued_id) still listed; check it by hand"; break; }
      sleep "$POLL_SECONDS"
    done
  fi
}

on_exit() {
  local rc=$?
  if [ "$rc" = 0 ]; then return; fi
  if [ "$JOB" = started ]; then
    echo "tpu_pod.sh: stopped (exit $rc) while the job may still be running on $TPU_NAME:" \
      "the slice is kept (tpu_pod.sh wait | status | logs | stop | delete)" >&2
    return
  fi
  if [ "$CREATED" != 1 ]; then
    if [ "$TPU_CREATE_TRIED" = 1 ]; then
      echo "tpu_pod.sh: failed (exit $rc); slice $TPU_NAME was there before: left as it is" >&2
    fi
    return
  fi
  if [ "$KEEP_TPU" = 1 ]; then
    echo "tpu_pod.sh: failed (exit $rc); KEEP_TPU=1 keeps slice $TPU_NAME" >&2
  else
    echo "tpu_pod.sh: failed (exit $rc): deleting slice $TPU_NAME, which this run created (KEEP_TPU=1 keeps it)" >&2
    delete_created || echo "tpu_pod.sh: could not delete $TPU_NAME: delete it by hand, it bills" >&2
  fi
}

up() {
  [ $# -ge 2 ] || die "usage: tpu_pod.sh up CONFIG RUN_NAME [flags...]"
  need TPU_NAME ZONE ACCELERATOR_TYPE BUCKET
  check_accelerator
  local run_name="$2" requeues=0 rc
  stage "$1" "${@:3}"  # refuse what cannot travel before anything is created
  trap on_exit EXIT
  trap 'exit 130' INT
  create
  setup
  if [ -n "${PREPARE:-}" ]; then
    # shellcheck disable=SC2086  # a list of dataset names
    prepare $PREPARE
  fi
  start "$@"
  while true; do
    rc=0
    wait_job "$run_name" || rc=$?
    case "$rc" in
      0) break ;;
      1)
        # Known failed: stop the other workers (their logs reach the bucket), then delete.
        stop || true
        die "the job failed (tpu_pod.sh logs; the run is in $(run_dir "$run_name"))" ;;
      3)
        JOB=ended
        if [ "$SPOT" != 1 ]; then die "slice $TPU_NAME is gone while the job ran (not spot: no re-queue)"; fi
        if [ "$CREATED" != 1 ]; then
          die "slice $TPU_NAME (which this script did not create) was preempted; delete it and run up again to resume"
        fi
        if [ "$requeues" -ge "$MAX_REQUEUES" ]; then
          die "slice $TPU_NAME was preempted; MAX_REQUEUES=$MAX_REQUEUES re-queues done, giving up (up again resumes)"
        fi
        requeues=$((requeues + 1))
        say "spot slice preempted: re-queue $requeues of $MAX_REQUEUES; the run resumes from its last checkpoint in $(run_dir "$run_name")"
        delete_created
        create
        setup
        start "$@" ;;
      *) exit "$rc" ;;
    esac
  done
  if [ "$DRY_RUN" = 1 ]; then
    KEEP_TPU="$KEEP_TPU" delete_created
    say "dry run: nothing was run"
    return
  fi
  delete_created
}

if [ -n "${ACCELERATOR_TYPE:-}" ]; then check_accelerator; fi
command="${1:-}"
case "$command" in
  up | create | setup | prepare | start | status | logs | stop | delete)
    shift
    "$command" "$@"
    ;;
  wait) shift; wait_job "$@" ;;
  wheel) build_wheel >&2; wheel ;;
  "" | -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *.py | *.py:*) up "$@" ;;
  *) die "unknown subcommand '$command' (up, create, setup, prepare, start, wait, status, logs, stop, delete, wheel; or CONFIG.py RUN_NAME)" ;;
esac

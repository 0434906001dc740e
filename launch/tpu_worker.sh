#!/usr/bin/env bash
# Runs on every Cloud TPU VM worker; launch/tpu_pod.sh copies it to ~/simsoft and calls it.
#
#   tpu_worker.sh setup WHEEL JAX_VERSION PYTHON_VERSION  uv, Python, venv, the runtime
#                                                         requirements, simsoft[all], jax[tpu]
#   tpu_worker.sh prepare DATA_DIR DATASET...            tfds build on this worker's disk,
#                                                        then copy to DATA_DIR (the bucket)
#   tpu_worker.sh start WORKDIR DATA_DIR ATTEMPT CONFIG [flags]
#                                 copy WORKDIR/inputs here, clear stale TPU users, start detached
#   tpu_worker.sh status | stop | logs [LINES]
#
# The job runs under nohup, detached from the ssh session that started it, from
# ~/simsoft (so the run's copied inputs/ resolve), and logs to
# ~/simsoft/logs/job.log. While it runs, every SIMSOFT_SYNC_SECONDS (60) the
# worker copies its log to WORKDIR/logs/worker-<N>.log and its state to
# WORKDIR/status/worker-<N>, one line:
#   ATTEMPT running EPOCH            the job runs (EPOCH: the time of this line)
#   ATTEMPT exited RC EPOCH          the job ended with exit code RC
#   ATTEMPT terminated RC EPOCH      the job was stopped by a signal (tpu_pod.sh stop,
#                                    or the VM shutting down: a spot preemption)
# so tpu_pod.sh wait / status / logs read the bucket, not each worker.
# The last line is written when the job ends, however it ends: `stop` sends
# SIGTERM, waits SIMSOFT_STOP_SECONDS (60) for the job to save and exit, then
# kills the job only (RC 137), so the wrapper still publishes.
# Workers never download data (SIMSOFT_TFDS_DOWNLOAD=0): a dataset missing from
# DATA_DIR fails at once with the `tfds build` command that prepares it.
set -euo pipefail
HOME_DIR="$HOME/simsoft"
VENV="$HOME_DIR/.venv"
LOG="$HOME_DIR/logs/job.log"
PIDFILE="$HOME_DIR/job.pid"
EXITFILE="$HOME_DIR/logs/exit_code"
CHILDFILE="$HOME_DIR/job.child"
SYNC_SECONDS="${SIMSOFT_SYNC_SECONDS:-60}"
STOP_SECONDS="${SIMSOFT_STOP_SECONDS:-60}"

worker_id() {
  if [ -n "${SIMSOFT_WORKER_ID:-}" ]; then echo "$SIMSOFT_WORKER_ID"; return; fi
  curl -sf -H Metadata-Flavor:Google \
    http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number \
    || hostname
}

job_pid() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then cat "$PIDFILE"; fi
}

setup() {
  local wheel="$1" jax_version="$2" python_version="$3"
  mkdir -p "$HOME_DIR/logs"
  export PATH="$HOME/.local/bin:$PATH"
  if ! command -v uv >/dev/null; then
    curl -LsSf https://astral.sh/uv/install.sh | sh
  fi
  uv python install "$python_version"
  if [ ! -x "$VENV/bin/python" ]; then
    uv venv --python "$python_version" "$VENV"
  fi
  # The runtime requirements only (no test or lint tools).
  uv pip install --python "$VENV/bin/python" -r "$HOME_DIR/requirements.txt" \
    "${HOME_DIR}/${wheel}[all]" "jax[tpu]==${jax_version}"
  "$VENV/bin/python" -c 'import jax, simsoft; print("worker", jax.process_index(), "ready:", simsoft.__file__)'
}

prepare() {
  # Downloads and extraction on this worker's disk, then one copy to the bucket.
  local data_dir="$1"
  shift
  "$VENV/bin/tfds" build "$@" --data_dir="$HOME_DIR/tfds" --download_dir="$HOME_DIR/tfds_downloads"
  gcloud storage rsync -r "$HOME_DIR/tfds" "$data_dir"
}

stop_job() {
  # SIGTERM to the job's process group (the _run wrapper and simsoft, which
  # saves a checkpoint and exits 75); after STOP_SECONDS, SIGKILL to simsoft
  # only, so the wrapper still publishes the final state; then to the group.
  local pid child
  pid="$(job_pid)"
  if [ -n "$pid" ]; then
    kill -- "-$pid" 2>/dev/null || kill "$pid"
    wait_gone "$pid" "$STOP_SECONDS"
    if kill -0 "$pid" 2>/dev/null; then
      child="$(cat "$CHILDFILE" 2>/dev/null || true)"
      if [ -n "$child" ]; then kill -9 "$child" 2>/dev/null || true; fi
      wait_gone "$pid" 30
      kill -9 -- "-$pid" 2>/dev/null || true
    fi
    echo "worker $(worker_id): stopped job $pid"
  fi
}

wait_gone() {  # PID SECONDS
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.2
  done
}

clear_tpu() {
  # Processes that still hold the TPU (a crashed or orphaned run): /dev/accel*
  # on v4 and older, /dev/vfio on v5e, v5p and v6e; then libtpu's lock file.
  local pids
  pids="$(sudo lsof -t /dev/accel* /dev/vfio/[0-9]* 2>/dev/null | sort -u || true)"
  if [ -n "$pids" ]; then
    echo "worker $(worker_id): killing stale TPU processes: $(echo "$pids" | tr '\n' ' ')"
    echo "$pids" | xargs sudo kill -9 || true
  fi
  sudo rm -f /tmp/libtpu_lockfile
}

start() {
  local workdir="$1" data_dir="$2" attempt="$3"
  shift 3
  stop_job
  clear_tpu
  mkdir -p "$HOME_DIR/logs"
  rm -f "$EXITFILE"
  # The run's config and the files it names (tpu_pod.sh copied them there).
  rm -rf "$HOME_DIR/inputs"
  mkdir -p "$HOME_DIR/inputs"
  gcloud storage rsync -r "$workdir/inputs" "$HOME_DIR/inputs" >/dev/null
  cd "$HOME_DIR"
  setsid nohup bash "$HOME_DIR/tpu_worker.sh" _run "$(worker_id)" "$workdir" "$data_dir" "$attempt" "$@" \
    >/dev/null 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  echo "worker $(worker_id): started job $!, log $LOG"
}

# Copies the log and the state line to the bucket; tries 3 times, never fails.
publish() {  # WORKER WORKDIR LINE
  echo "$3" >"$HOME_DIR/logs/status"
  for _ in 1 2 3; do
    if gcloud storage cp "$LOG" "$2/logs/worker-$1.log" >/dev/null 2>&1 \
      && gcloud storage cp "$HOME_DIR/logs/status" "$2/status/worker-$1" >/dev/null 2>&1; then
      return 0
    fi
    sleep 2
  done
  return 0
}

# The job's wrapper: runs simsoft, publishes its state while it runs and once
# more when it ends. No errexit here: a SIGTERM (a stop, the VM shutting down)
# also kills the wrapper's `sleep` and `date`, whose failure must not skip the
# last publish (it did: the bucket kept 'running' after a stop).
_run() {
  set +e
  local worker="$1" workdir="$2" data_dir="$3" attempt="$4" config="$5"
  shift 5
  local rc=0 job last=0 now terminated=0
  : >"$LOG"
  SIMSOFT_TFDS_DOWNLOAD=0 "$VENV/bin/python" -m simsoft.main --distributed --config "$config" \
    --workdir "$workdir" --config.dataset.data_dir="$data_dir" "$@" >"$LOG" 2>&1 &
  job=$!
  echo "$job" >"$CHILDFILE"
  # A stop or the VM's shutdown (spot preemption): pass SIGTERM on, say so.
  trap 'terminated=1; kill -TERM "$job" 2>/dev/null' TERM INT
  while kill -0 "$job" 2>/dev/null; do
    now="$(date +%s)"
    if [ $((now - last)) -ge "$SYNC_SECONDS" ]; then
      publish "$worker" "$workdir" "$attempt running $now"
      last="$now"
    fi
    sleep 1
  done
  wait "$job"
  rc=$?
  # wait returns early (>128) when a trapped signal arrives during it.
  while kill -0 "$job" 2>/dev/null; do
    wait "$job"
    rc=$?
  done
  echo "$rc" >"$EXITFILE"
  if [ "$terminated" = 1 ]; then
    publish "$worker" "$workdir" "$attempt terminated $rc $(date +%s)"
  else
    publish "$worker" "$workdir" "$attempt exited $rc $(date +%s)"
  fi
}

status() {
  local pid
  pid="$(job_pid)"
  if [ -n "$pid" ]; then
    echo "worker $(worker_id): running (pid $pid): $(tail -n 1 "$LOG" 2>/dev/null)"
  elif [ -f "$EXITFILE" ]; then
    echo "worker $(worker_id): exited $(cat "$EXITFILE")"
  else
    echo "worker $(worker_id): no job"
  fi
}

logs() {
  local worker
  worker="$(worker_id)"
  tail -n "${1:-20}" "$LOG" 2>/dev/null | sed "s/^/[worker $worker] /"
}

command="${1:?usage: tpu_worker.sh setup|prepare|start|status|stop|logs ...}"
shift
case "$command" in
  setup | prepare | start | _run | status | logs) "$command" "$@" ;;
  stop) stop_job ;;
  *) echo "tpu_worker.sh: unknown command $command" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs on every Cloud TPU VM worker; launch/tpu_pod.sh copies it to ~/simsoft and calls it.
#
#   tpu_worker.sh setup WHEEL JAX_VERSION PYTHON_VERSION   uv, Python, venv, simsoft[all], jax[tpu]
#   tpu_worker.sh prepare DATA_DIR DATASET...            tfds build (one worker, once per bucket)
#   tpu_worker.sh start WORKDIR DATA_DIR CONFIG [flags]  clear stale TPU users, start detached
#   tpu_worker.sh status | stop | logs [LINES]
#
# The job runs under nohup, detached from the ssh session that started it, and
# logs to ~/simsoft/logs/job.log; when it ends, its exit code goes to
# ~/simsoft/logs/exit_code and the log to WORKDIR/logs/worker-<N>.log.
# Workers never download data (SIMSOFT_TFDS_DOWNLOAD=0): a dataset missing from
# DATA_DIR fails at once with the `tfds build` command that prepares it.
set -euo pipefail
HOME_DIR="$HOME/simsoft"
VENV="$HOME_DIR/.venv"
LOG="$HOME_DIR/logs/job.log"
PIDFILE="$HOME_DIR/job.pid"
EXITFILE="$HOME_DIR/logs/exit_code"

worker_id() {
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
  uv pip install --python "$VENV/bin/python" -r "$HOME_DIR/requirements.txt" \
    "${HOME_DIR}/${wheel}[all]" "jax[tpu]==${jax_version}"
  "$VENV/bin/python" -c 'import jax, simsoft; print("worker", jax.process_index(), "ready:", simsoft.__file__)'
}

prepare() {
  local data_dir="$1"
  shift
  "$VENV/bin/tfds" build "$@" --data_dir="$data_dir"
}

stop_job() {
  local pid
  pid="$(job_pid)"
  if [ -n "$pid" ]; then
    kill -- "-$pid" 2>/dev/null || kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 -- "-$pid" 2>/dev/null || true
    echo "worker $(worker_id): stopped job $pid"
  fi
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
  local workdir="$1" data_dir="$2"
  shift 2
  stop_job
  clear_tpu
  mkdir -p "$HOME_DIR/logs"
  rm -f "$EXITFILE"
  cd "$HOME_DIR"
  setsid nohup bash "$HOME_DIR/tpu_worker.sh" _run "$(worker_id)" "$workdir" "$data_dir" "$@" \
    >/dev/null 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  echo "worker $(worker_id): started job $!, log $LOG"
}

_run() {
  local worker="$1" workdir="$2" data_dir="$3" config="$4"
  shift 4
  local rc=0
  SIMSOFT_TFDS_DOWNLOAD=0 "$VENV/bin/python" -m simsoft.main --distributed --config "$config" \
    --workdir "$workdir" --config.dataset.data_dir="$data_dir" "$@" >"$LOG" 2>&1 || rc=$?
  echo "$rc" >"$EXITFILE"
  gcloud storage cp "$LOG" "$workdir/logs/worker-$worker.log" >/dev/null 2>&1 || true
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

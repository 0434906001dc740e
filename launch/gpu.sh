#!/usr/bin/env bash
# One machine with one or more GPUs: data parallelism over every local GPU.
#
#   bash launch/gpu.sh run configs/cifar10.py:model=resnet20,similarity=confusion /tmp/simsoft/c10 \
#       --config.dataset.data_dir=$HOME/tensorflow_datasets
#
# Subcommands:
#   run CONFIG WORKDIR [flags]    in the foreground (`gpu.sh CONFIG WORKDIR` means run)
#   start CONFIG WORKDIR [flags]  detached (nohup; survives a closed terminal or ssh),
#                                 logging to $LOG_DIR/job.log
#   logs [LINES] | status | stop  the detached job's log, state (running / exit code), stop
# Installs JAX with CUDA wheels into .venv (launch/setup.sh, first run), then runs
# the pipeline; TensorFlow stays on the CPU (simsoft.data hides the GPUs from it).
# start first stops a job it started earlier and that is still running.
# LOG_DIR (default .gpu_job/) holds job.log, job.pid and exit_code.
# XLA's GPU kernels run deterministically (--xla_gpu_deterministic_ops: without
# it, two runs of one config differed on an H200, benchmarks/RESULTS.md section
# 6); DETERMINISTIC=0 drops the flag for speed.
# DRY_RUN=1 prints the commands it would run ("would run: ...") and runs none.
# Installs the runtime requirements only (REQUIREMENTS=requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN="${DRY_RUN:-0}"
LOG_DIR="${LOG_DIR:-.gpu_job}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
XLA_FLAGS="${XLA_FLAGS:-}"
if [ "${DETERMINISTIC:-1}" != 0 ]; then
  XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_deterministic_ops=true"
fi

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

install() {
  run env REQUIREMENTS=requirements.txt bash launch/setup.sh  # the runtime set
  local jax_version
  jax_version="$(sed -n 's/^jax==//p' requirements.txt)"
  run .venv/bin/python -m pip install -q "jax[cuda12]==$jax_version"
}

job_pid() {
  if [ -f "$LOG_DIR/job.pid" ] && kill -0 "$(cat "$LOG_DIR/job.pid")" 2>/dev/null; then
    cat "$LOG_DIR/job.pid"
  fi
}

usage() { echo "usage: launch/gpu.sh run|start CONFIG WORKDIR [flags...] | logs | status | stop" >&2; exit 2; }

cmd_run() {
  [ $# -ge 2 ] || usage
  local config="$1" workdir="$2"
  shift 2
  install
  run env "XLA_FLAGS=$XLA_FLAGS" .venv/bin/python -m simsoft.main --config "$config" --workdir "$workdir" "$@"
}

cmd_start() {
  [ $# -ge 2 ] || usage
  cmd_stop
  install
  run mkdir -p "$LOG_DIR"
  run rm -f "$LOG_DIR/exit_code"
  local config="$1" workdir="$2"
  shift 2
  local job
  job="$(printf '%q ' env "XLA_FLAGS=$XLA_FLAGS" .venv/bin/python -m simsoft.main --config "$config" --workdir "$workdir" "$@")"
  local detached=(setsid nohup bash -c "$job > $LOG_DIR/job.log 2>&1; echo \$? > $LOG_DIR/exit_code")
  if [ "$DRY_RUN" = 1 ]; then
    run "${detached[@]}"
    return
  fi
  "${detached[@]}" >/dev/null 2>&1 </dev/null &
  echo $! >"$LOG_DIR/job.pid"
  echo "started job $! (log $LOG_DIR/job.log; gpu.sh logs | status | stop)"
}

cmd_stop() {
  local pid
  pid="$(job_pid)"
  if [ -n "$pid" ]; then
    run kill -- "-$pid"
    echo "stopped job $pid"
  fi
}

cmd_status() {
  local pid
  pid="$(job_pid)"
  if [ -n "$pid" ]; then
    echo "running (pid $pid): $(tail -n 1 "$LOG_DIR/job.log" 2>/dev/null)"
  elif [ -f "$LOG_DIR/exit_code" ]; then
    echo "exited $(cat "$LOG_DIR/exit_code")"
  else
    echo "no job"
  fi
}

cmd_logs() { tail -n "${1:-40}" "$LOG_DIR/job.log"; }

case "${1:-}" in
  run | start | stop | status | logs)
    command="$1"
    shift
    "cmd_$command" "$@"
    ;;
  "" | -h | --help) usage ;;
  *.py | *.py:*) cmd_run "$@" ;;
  *) echo "gpu.sh: unknown subcommand '$1' (run, start, logs, status, stop; or CONFIG.py WORKDIR)" >&2; exit 2 ;;
esac

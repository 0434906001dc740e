#!/usr/bin/env bash
# The venv python of a fake pod worker that really runs simsoft
# (tests/helpers/fake_pod_simsoft.py), with the tests' python.
set -euo pipefail
if [ "${1:-}" = -c ]; then echo "worker $SIMSOFT_WORKER_ID ready: simsoft"; exit 0; fi
exec "$FAKE_REAL_PYTHON" -m tests.helpers.fake_pod_simsoft "$@"
